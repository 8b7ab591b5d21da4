"""The decoded message: what the decoder and session hand to every consumer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .frames import EVENT_KINDS, Channel, Direction
from .protocol.problems import Problem, Severity, worst


@dataclass(slots=True, eq=False)
class Message:
    """One vhost-user message (or one connection event, or one raw chunk).

    ``kind`` is ``message`` for a framed vhost-user message, ``raw`` for bytes
    that could not be framed, and ``open``/``close``/``note`` for connection
    events.  ``frame`` is the number of the frame (capture packet) that
    completed the message; ``index`` counts messages.  ``reply_to`` and
    ``reply_in`` link a request and its reply by frame number, as Wireshark does.
    Attribute names are the NDJSON keys and filter names (see :mod:`vuinspect.fields`).
    """

    index: int
    frame: int
    ts_ns: int
    conn: int
    channel: Channel
    direction: Direction
    kind: str = "message"
    request: int | None = None
    flags: int | None = None
    size: int | None = None
    name: str = ""
    reply: bool = False
    need_reply: bool = False
    payload: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    fds: tuple[str, ...] = ()
    raw: bytes = b""
    problems: list[Problem] = field(default_factory=list)
    reply_to: int | None = None
    reply_in: int | None = None
    latency_us: float | None = None
    #: the capture's comment on the frame that completed the message (pcapng opt_comment)
    comment: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    big_endian: bool = False

    @property
    def is_event(self) -> bool:
        return self.kind in EVENT_KINDS

    @property
    def order(self) -> str:
        """The struct byte order of the message's bytes: ``>`` big-endian, ``<`` little."""
        return ">" if self.big_endian else "<"

    @property
    def problem_codes(self) -> list[str]:
        return [p.code for p in self.problems]

    @property
    def severity(self) -> Severity | None:
        """The highest severity of this message's problems (error, warning, note) or None."""
        return worst(self.problems) if self.problems else None

    @property
    def is_reply(self) -> bool:
        """Old name of :attr:`reply`, read-only (addon scripts written against it)."""
        return self.reply

    def to_dict(self) -> dict[str, Any]:
        """The NDJSON object of ``vuinspect read --json`` for this message.

        Keys are the field names of :mod:`vuinspect.fields`; ``problems`` holds one
        object per problem (code, severity, text), ``severity`` the highest of them.
        """
        return {
            "frame": self.frame,
            "index": self.index,
            "ts": ts_text(self.ts_ns),
            "ts_ns": self.ts_ns,
            "conn": self.conn,
            "channel": self.channel,
            "direction": self.direction,
            "kind": self.kind,
            "request": self.request,
            "name": self.name,
            "reply": self.reply,
            "flags": self.flags,
            "need_reply": self.need_reply,
            "size": self.size,
            "layout": self.layout,
            "fds": list(self.fds),
            "payload": self.payload if not self.is_event else self.info,
            "reply_to": self.reply_to,
            "reply_in": self.reply_in,
            "latency_us": self.latency_us,
            "problems": [p.to_json() for p in self.problems],
            "severity": self.severity,
            "comment": self.comment,
        }


def ts_text(ts_ns: int) -> str:
    """Seconds.nanoseconds of a capture timestamp, the exact decimal (``ts``, as tshark's
    frame.time_epoch); any integer formats, :func:`parse_ts` reads it back."""
    sign = "-" if ts_ns < 0 else ""
    sec, ns = divmod(abs(ts_ns), 1_000_000_000)
    return f"{sign}{sec}.{ns:09d}"


_TS = re.compile(r"(-?)(\d*)(?:\.(\d{1,9}))?")


def parse_ts(text: str) -> int | None:
    """``"1764000000.123456789"`` (seconds, at most 9 decimals) -> nanoseconds, exactly
    (a float cannot hold them); None when ``text`` is not such a number."""
    m = _TS.fullmatch(text)
    if m is None or not (m.group(2) or m.group(3)):
        return None
    sign, sec, frac = m.groups()
    ns = int(sec or 0) * 1_000_000_000 + int((frac or "").ljust(9, "0"))
    return -ns if sign else ns
