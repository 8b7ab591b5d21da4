"""Capture files to decoded messages and frames, with one-line errors for the CLI."""

from __future__ import annotations

import os

from ..capture import CaptureError, CaptureFormatError, CaptureReader
from ..cli import CliError
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
            return list(reader)
    except CaptureFormatError as exc:
        raise CliError(f"{path}: not a vuinspect capture: {exc.reason}") from None
    except CaptureError as exc:
        raise CliError(f"{path}: {exc.reason}") from None


def decode(frames: list[Frame]) -> list[Message]:
    """The decoder's messages for ``frames`` (the same Pipeline as ``read`` and the TUI)."""
    return list(Pipeline().run(frames))


def read_messages(path: str) -> list[Message]:
    return decode(read_frames(path))
