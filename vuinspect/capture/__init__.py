"""pcapng captures of vuinspect frames: write, stream back, index for random access.

Layout: docs/capture-format.md.  ``pseudohdr`` holds the per-packet header the
Lua dissector shares; ``pcapng`` the block constants and parsing; ``writer``,
``reader`` and ``index`` the three ways in and out.
"""

from __future__ import annotations

from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.capture.index import CaptureIndex, build_index
from vuinspect.capture.reader import CaptureReader, read_frames
from vuinspect.capture.writer import CaptureWriter

__all__ = [
    "CaptureError",
    "CaptureFormatError",
    "CaptureIndex",
    "CaptureReader",
    "CaptureWriter",
    "build_index",
    "read_frames",
]
