"""The error every command ends with when it cannot go on: one line, no traceback.

Kept apart from ``cli.py`` so the commands and faces that raise it never import the
dispatcher that loads them.  The wording for a capture file that cannot be read is in
``capture/errors.py`` (:func:`~vuinspect.capture.errors.capture_error`), beside its errors.
"""

from __future__ import annotations

from .render import safe_text


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
