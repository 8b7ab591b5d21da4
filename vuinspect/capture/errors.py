"""Capture errors: damage is reported with a byte offset, foreign files with one line.

The functions at the end word them for a command (``read``, ``view``, ``diff``...):
one wording for every command that opens a capture.
"""

from __future__ import annotations

import os

from ..errors import CliError

NOT_OURS = "not a vuinspect capture"


class CaptureError(Exception):
    """A capture problem: what went wrong and, when known, at which byte offset.

    The reader does not raise this for damaged input; it stops and stores it
    as ``reader.error`` so every whole frame before the damage stays usable.
    It is raised for problems opening or writing a capture.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(offset={self.offset!r}, reason={self.reason!r})"


class CaptureFormatError(CaptureError):
    """The input is not a vuinspect pcapng capture (text, classic pcap, other link types)."""


def check_path(path: str) -> None:
    """CliError unless ``path`` names something to open as a capture."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory")


def capture_error(name: str, exc: CaptureError) -> CliError:
    """The one line for a capture the reader refused (``PATH: not a vuinspect capture:
    why``) or could not open (``PATH: why``); raise it ``from None``."""
    if isinstance(exc, CaptureFormatError):  # some reasons end saying it already
        return CliError(f"{name}: {NOT_OURS}: {exc.reason.removesuffix(': ' + NOT_OURS)}")
    return CliError(f"{name}: {exc.reason}")


def damage_text(name: str, offset: int | None, reason: str) -> str:
    """``PATH: capture damaged at byte N: why``: the one wording for a capture cut short."""
    where = f" at byte {offset}" if offset is not None else ""
    return f"{name}: capture damaged{where}: {reason}"
