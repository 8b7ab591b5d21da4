"""The error every command ends with when it cannot go on: one line, no traceback.

Kept apart from ``cli.py`` so the commands and faces that raise it never import the
dispatcher that loads them.  The wording for a capture file that cannot be read is here
too (:func:`check_path`, :func:`capture_error`), so every command says it the same way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .render import safe_text

if TYPE_CHECKING:
    from .capture import CaptureError

NOT_OURS = "not a vuinspect capture"


class CliError(Exception):
    """An error to report as one line, without a traceback; ``code`` is the exit status
    (2 for usage errors such as a bad filter, as tshark does)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def error_line(command: str, message: str) -> str:
    """``vuinspect COMMAND: message`` with control characters escaped: the message may
    quote what a user typed (a path) or a peer or file sent (a reason, a label)."""
    return f"vuinspect {command}: {safe_text(message)}"


def check_path(path: str) -> None:
    """CliError unless ``path`` names something to open as a capture."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory")


def capture_error(name: str, exc: CaptureError) -> CliError:
    """The one line for a capture the reader refused (``PATH: not a vuinspect capture:
    why``) or could not open (``PATH: why``); raise it ``from None``."""
    from .capture import CaptureFormatError

    if isinstance(exc, CaptureFormatError):  # some reasons end saying it already
        return CliError(f"{name}: {NOT_OURS}: {exc.reason.removesuffix(': ' + NOT_OURS)}")
    return CliError(f"{name}: {exc.reason}")


def damage_text(name: str, offset: int | None, reason: str) -> str:
    """``PATH: capture damaged at byte N: why``: the one wording for a capture cut short."""
    where = f" at byte {offset}" if offset is not None else ""
    return f"{name}: capture damaged{where}: {reason}"
