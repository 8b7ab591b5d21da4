"""The error every command ends with when it cannot go on: one line, no traceback.

Kept apart from ``cli.py`` so the commands and faces that raise it never import the
dispatcher that loads them.
"""

from __future__ import annotations


class CliError(Exception):
    """An error to report as one line, without a traceback; ``code`` is the exit status
    (2 for usage errors such as a bad filter, as tshark does)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
