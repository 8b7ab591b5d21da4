"""Capture files to decoded messages and frames, with one-line errors for the CLI."""

from __future__ import annotations

import sys

from ..capture import CaptureError, CaptureReader
from ..capture.errors import capture_error, check_path, damage_text
from ..errors import CliError
from ..frames import Frame
from ..message import Message
from ..pipeline import Pipeline
from ..render import safe_text


def read_frames(path: str) -> list[Frame]:
    """Every frame of ``path``; CliError (one line) when it is not a readable capture."""
    check_path(path)
    try:
        with CaptureReader(path) as reader:
            frames = list(reader)
    except CaptureError as exc:
        raise capture_error(path, exc) from None
    err = reader.error
    if err is not None:  # damage: the whole frames before it are still compared
        text = damage_text(path, err.offset, err.reason)
        if not frames:
            raise CliError(text)
        line = f"{text}; using the {len(frames)} whole frames before it"
        print(f"vuinspect: {safe_text(line)}", file=sys.stderr)
    return frames


def decode(frames: list[Frame]) -> list[Message]:
    """The decoder's messages for ``frames`` (the same Pipeline as ``read`` and the TUI)."""
    return list(Pipeline().run(frames))


def read_messages(path: str) -> list[Message]:
    return decode(read_frames(path))
