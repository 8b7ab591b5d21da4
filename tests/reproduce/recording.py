"""Small hand-made recordings for the replay tests (both roles)."""

from __future__ import annotations

from pathlib import Path

from vuinspect.capture import CaptureWriter
from vuinspect.frames import Frame, event_frame


def recording(tmp_path: Path, frames: list[Frame], device: str = "blk") -> Path:
    """A capture of one connection: an OPEN event, then ``frames``."""
    path = tmp_path / "rec.pcapng"
    with CaptureWriter(str(path)) as w:
        w.write(event_frame("open", 1, 1, {"device": device, "orientation": "frontend-connects"}))
        for f in frames:
            w.write(f)
    return path


def frame(ts: int, channel: str, direction: str, data: bytes, fds: tuple[str, ...] = ()) -> Frame:
    return Frame(ts, 1, channel, direction, data, fds)  # type: ignore[arg-type]
