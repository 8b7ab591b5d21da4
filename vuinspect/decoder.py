"""Framing: a byte stream plus fds in, whole vhost-user messages out (sans-IO).

One :class:`StreamFramer` per (connection, channel, direction).  It frames
exactly as a receiving peer would: read a 12-byte header, then ``size`` payload
bytes.  Messages split across frames and several messages in one frame are
both normal.  It never raises: when a header cannot be trusted (``size`` above
the protocol maximum) it reports ``framing_lost``, passes the bytes on as a raw
chunk and resynchronises on the next plausible header.  Nothing is dropped.
A frame that is exactly one message above the maximum (the proxy forwards
messages whole up to its own, larger limit) is a message flagged ``oversize``,
its framing kept.

fds are attached the way the kernel delivers them: the fds of a frame belong
to the message holding the frame's last byte (TECH.md §5).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import cache

from .protocol.problems import Problem, problem
from .protocol.requests import (
    BY_CHANNEL,
    FLAGS_KNOWN,
    FRONTEND,
    HEADER_SIZE,
    MAX_PAYLOAD,
    VERSION,
    lookup,
)


@dataclass(slots=True)
class RawMessage:
    """A framed message (or raw chunk) before payload decoding."""

    data: bytes
    fds: tuple[str, ...]
    ts_ns: int
    frame: int
    request: int | None = None
    flags: int | None = None
    size: int | None = None
    raw: bool = False  # True: bytes that do not form a message
    problems: list[Problem] = field(default_factory=list)


def parse_header(data: bytes, order: str = "<") -> tuple[int, int, int]:
    return struct.unpack_from(order + "III", data, 0)


def plausible_header(data: bytes | bytearray, off: int, channel: str, order: str) -> bool:
    """Could a message start at ``off``?  Used only to resynchronise."""
    if len(data) - off < HEADER_SIZE:
        return False
    req, flags, size = struct.unpack_from(order + "III", data, off)
    return (
        flags & ~FLAGS_KNOWN == 0
        and flags & 0x3 == VERSION
        and size <= MAX_PAYLOAD
        and lookup(channel, req) is not None
    )


def _byte_class(values: set[int] | range) -> bytes:
    return b"[" + b"".join(b"\\x%02x" % v for v in sorted(values)) + b"]"


def _u32_at_most(limit: int, order: str) -> bytes:
    """A regex for a u32 <= ``limit`` in byte order ``order`` (exact, no false matches)."""
    digits = limit.to_bytes(4, "big")
    alts = []
    for i, d in enumerate(digits):
        if d:  # equal on bytes[:i], smaller at byte i, anything after
            parts = (
                [b"\\x%02x" % x for x in digits[:i]]
                + [_byte_class(range(d))]
                + [b"[\\x00-\\xff]"] * (3 - i)
            )
            alts.append(parts if order == ">" else parts[::-1])
    alts.append([b"\\x%02x" % x for x in (digits if order == ">" else digits[::-1])])
    return b"(?:" + b"|".join(b"".join(a) for a in alts) + b")"


@cache
def _header_pattern(channel: str, order: str) -> re.Pattern[bytes]:
    """A regex matching exactly the headers :func:`plausible_header` accepts.

    Resynchronising with it runs at regex speed (hundreds of MB/s) instead of
    one Python call per byte (issue 11 item 9).
    """
    codes = set(BY_CHANNEL.get(channel, FRONTEND))
    flags = {f for f in range(FLAGS_KNOWN + 1) if f & ~FLAGS_KNOWN == 0 and f & 0x3 == VERSION}
    if max(codes) > 0xFF or FLAGS_KNOWN > 0xFF:  # not the case today; stay exact anyway
        return re.compile(b"(?s).{%d}" % HEADER_SIZE)
    zeros = b"\\x00\\x00\\x00"
    req, flg = _byte_class(codes), _byte_class(flags)
    head = req + zeros + flg + zeros if order == "<" else zeros + req + zeros + flg
    return re.compile(head + _u32_at_most(MAX_PAYLOAD, order))


class StreamFramer:
    """Reassemble the messages of one direction of one channel."""

    def __init__(self, channel: str = "main", order: str = "<") -> None:
        self.channel = channel
        self.order = order
        self._buf = bytearray()
        # fds waiting for the message holding the byte at this buffer offset
        self._fds: list[tuple[int, tuple[str, ...]]] = []
        self._ts = 0
        self._frame = 0

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole message."""
        return len(self._buf)

    def feed(self, data: bytes, fds: tuple[str, ...], ts_ns: int, frame: int) -> list[RawMessage]:
        if not self._buf and len(data) >= HEADER_SIZE:
            # Fast path: the frame is exactly one whole message (what the proxy writes).
            req, flags, size = struct.unpack_from(self.order + "III", data, 0)
            if len(data) == HEADER_SIZE + size:
                if self._fds:  # fds of an earlier zero-byte frame, if any
                    fds = self._take_fds(0, len(data)) + fds
                msg = RawMessage(data, fds, ts_ns, frame, req, flags, size)
                if size > MAX_PAYLOAD:
                    # The sender framed it whole (the proxy frames up to its own larger
                    # limit): decode it whole, flagged, instead of losing the framing.
                    msg.problems.append(
                        problem(
                            "oversize",
                            f"payload of {size} bytes above the protocol maximum "
                            f"({MAX_PAYLOAD}); framed whole by the sender",
                        )
                    )
                return [msg]
        out: list[RawMessage] = []
        if not self._buf:
            self._ts = ts_ns
            self._frame = frame
        self._buf += data
        if fds:
            self._fds.append((len(self._buf) - 1, fds))
        pos = 0
        buf = self._buf
        while True:
            avail = len(buf) - pos
            if avail < HEADER_SIZE:
                break
            req, flags, size = struct.unpack_from(self.order + "III", buf, pos)
            if size > MAX_PAYLOAD:
                nxt = self._resync(buf, pos + 1)
                chunk = bytes(buf[pos:nxt])
                msg = RawMessage(chunk, self._take_fds(pos, nxt), self._ts, frame, raw=True)
                msg.problems.append(
                    problem(
                        "oversize", f"header announces {size} payload bytes (max {MAX_PAYLOAD})"
                    )
                )
                msg.problems.append(
                    problem(
                        "framing_lost",
                        f"{len(chunk)} bytes passed through raw"
                        + (
                            ", resynchronised on the next plausible header"
                            if nxt < len(buf)
                            else ""
                        ),
                    )
                )
                out.append(msg)
                pos = nxt
                self._ts, self._frame = ts_ns, frame
                continue
            total = HEADER_SIZE + size
            if avail < total:
                break
            msg = RawMessage(
                bytes(buf[pos : pos + total]),
                self._take_fds(pos, pos + total),
                self._ts,
                frame,
                req,
                flags,
                size,
            )
            pos += total
            out.append(msg)
            self._ts, self._frame = ts_ns, frame
        if pos:
            del buf[:pos]
            self._fds = [(off - pos, f) for off, f in self._fds]
        return out

    def _take_fds(self, start: int, end: int) -> tuple[str, ...]:
        """The fds whose carrying frame ended inside [start, end)."""
        if not self._fds:
            return ()
        taken: tuple[str, ...] = ()
        keep = []
        for off, fds in self._fds:
            if off < end:
                taken += fds
            else:
                keep.append((off, fds))
        self._fds = keep
        return taken

    def _resync(self, buf: bytearray, start: int) -> int:
        """Offset of the next plausible header at or after ``start`` (``len(buf)`` if none)."""
        search = _header_pattern(self.channel, self.order).search
        pos = start
        while True:
            m = search(buf, pos)
            if m is None:
                return len(buf)
            if plausible_header(buf, m.start(), self.channel, self.order):
                return m.start()
            pos = m.start() + 1  # only if the pattern is looser than plausible_header

    def feed_cut(
        self, data: bytes, fds: tuple[str, ...], ts_ns: int, frame: int, missing: int
    ) -> list[RawMessage]:
        """A frame the capture's snap length cut (``missing`` bytes left out).

        Its bytes are not joined with the next frame's (they would misframe the
        stream): what was buffered ends as truncated, then the cut frame is one
        message flagged truncated, and framing starts afresh after it.
        """
        out = self.close()
        self._ts, self._frame = ts_ns, frame
        msg = RawMessage(data, fds, ts_ns, frame)
        total = len(data) + missing
        if len(data) < HEADER_SIZE:
            msg.raw = True
            msg.problems.append(
                problem(
                    "truncated_header",
                    f"the capture kept {len(data)} of this packet's {total} bytes (snap length)",
                )
            )
        else:
            msg.request, msg.flags, msg.size = parse_header(data, self.order)
            msg.problems.append(
                problem(
                    "truncated_payload",
                    f"the capture kept {len(data)} of this packet's {total} bytes (snap length)",
                )
            )
        out.append(msg)
        return out

    def close(self) -> list[RawMessage]:
        """End of stream: whatever is buffered becomes a truncated message."""
        if not self._buf:
            if not self._fds:
                return []
            # fds recorded with no bytes at all (a damaged capture): keep them visible
            fds = self._take_fds(0, 1)
            msg = RawMessage(b"", fds, self._ts, self._frame, raw=True)
            msg.problems.append(
                problem("fd_count", f"{len(fds)} fds arrived with no message bytes")
            )
            return [msg]
        data = bytes(self._buf)
        self._buf.clear()
        msg = RawMessage(data, self._take_fds(0, len(data)), self._ts, self._frame)
        if len(data) < HEADER_SIZE:
            msg.raw = True
            msg.problems.append(
                problem("truncated_header", f"stream ended after {len(data)} of 12 header bytes")
            )
        else:
            msg.request, msg.flags, msg.size = parse_header(data, self.order)
            msg.problems.append(
                problem(
                    "truncated_payload",
                    f"stream ended after {len(data) - HEADER_SIZE} of {msg.size} payload bytes",
                )
            )
        return [msg]
