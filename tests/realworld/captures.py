"""Read a proxy capture back into decoded messages, and the checks the tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vuinspect.capture import read_frames
from vuinspect.frames import Frame, event_info
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.requests import lookup


@dataclass
class Capture:
    frames: list[Frame]
    messages: list[Message]

    def opens(self) -> list[tuple[int, dict]]:
        return [
            (f.conn, event_info(f)) for f in self.frames if f.kind == "open" and f.channel == "main"
        ]

    def closes(self) -> list[tuple[int, dict]]:
        return [
            (f.conn, event_info(f))
            for f in self.frames
            if f.kind == "close" and f.channel == "main"
        ]

    def requests(self, conn: int | None = None, channel: str = "main") -> list[Message]:
        return [
            m
            for m in self.messages
            if m.kind == "message"
            and not m.reply
            and m.channel == channel
            and (conn is None or m.conn == conn)
        ]

    def names(self, conn: int | None = None) -> list[str]:
        return [m.name for m in self.requests(conn)]

    def conns_with_traffic(self) -> list[int]:
        return sorted({m.conn for m in self.messages if m.kind == "message"})


def load(path: Path) -> Capture:
    frames = list(read_frames(path))
    pipeline = Pipeline()
    messages = [m for f in frames for m in pipeline.feed(f)]
    return Capture(frames, messages)


def unanswered(cap: Capture) -> list[str]:
    """Requests that need a reply (always-replied ones, or NEED_REPLY set) but got none."""
    missing = []
    for m in cap.messages:
        if m.kind != "message" or m.reply:
            continue
        spec = lookup(m.channel, m.request or 0)
        needs = m.need_reply or (spec is not None and spec.reply_mode == "always")
        if needs and m.reply_in is None:
            missing.append(f"{m.name} (frame {m.frame}, conn {m.conn})")
    return missing
