"""Capture errors: damage is reported with a byte offset, foreign files with one line."""

from __future__ import annotations


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
