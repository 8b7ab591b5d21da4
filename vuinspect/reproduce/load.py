"""Capture files to decoded messages and frames, with one-line errors for the CLI."""

from __future__ import annotations

import os
import sys

from ..capture import CaptureError, CaptureFormatError, CaptureReader
from ..errors import CliError
from ..frames import Frame
from ..message import Message
from ..pipeline import Pipeline


def read_frames(path: str) -> list[Frame]:
    """Every frame of ``path``; CliError (one line) when it is not a readable capture."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory")
    try:
        with CaptureReader(path) as reader:
            frames = list(reader)
    except CaptureFormatError as exc:
        raise CliError(f"{path}: not a vuinspect capture: {exc.reason}") from None
    except CaptureError as exc:
        raise CliError(f"{path}: {exc.reason}") from None
    err = reader.error
    if err is not None:  # damage: the whole frames before it are still compared
        where = f" at byte {err.offset}" if err.offset is not None else ""
        text = f"{path}: capture damaged{where}: {err.reason}"
        if not frames:
            raise CliError(text)
        print(f"vuinspect: {text}; using the {len(frames)} whole frames before it", file=sys.stderr)
    return frames


def decode(frames: list[Frame]) -> list[Message]:
    """The decoder's messages for ``frames`` (the same Pipeline as ``read`` and the TUI)."""
    return list(Pipeline().run(frames))


def read_messages(path: str) -> list[Message]:
    return decode(read_frames(path))
