"""Decoding: a byte stream plus fds in, whole vhost-user messages out, then decoded (sans-IO).

One :class:`StreamFramer` per (connection, channel, direction).  It frames
exactly as a receiving peer would (:func:`vuinspect.framing.cut_messages` with
the protocol's ``MAX_PAYLOAD``): read a 12-byte header, then ``size`` payload
bytes.  Messages split across frames and several messages in one frame are
both normal.  It never raises: when a header cannot be trusted (``size`` above
the protocol maximum) it reports ``framing_lost``, passes the bytes on as a raw
chunk and resynchronises on the next plausible header.  Nothing is dropped.
A frame that is exactly one message above the maximum (the proxy forwards
messages whole up to its own, larger limit) is a message flagged ``oversize``,
its framing kept.

fds are attached the way the kernel delivers them: the fds of a frame belong
to the message holding the frame's last byte (TECH.md §5).

:func:`decode_message` decodes one framed message alone (what needs no
connection state); the session adds pairing and the stateful checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

from .frames import Channel, Direction
from .framing import HEADER, cut_messages, one_message
from .message import Message
from .payload import DecodeContext, choose_layout, decode_layout
from .protocol.problems import Problem, problem
from .protocol.requests import (
    BY_CHANNEL,
    FLAG_NEED_REPLY,
    FLAG_REPLY,
    FLAG_VERSION_MASK,
    FLAGS_KNOWN,
    FRONTEND,
    HEADER_SIZE,
    MAX_PAYLOAD,
    REPLY_FLAGS,
    VERSION,
    RequestSpec,
    lookup,
    request_name,
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
    return HEADER[order].unpack_from(data, 0)


def plausible_header(data: bytes | bytearray, off: int, channel: str, order: str) -> bool:
    """Could a message start at ``off``?  Used only to resynchronise."""
    if len(data) - off < HEADER_SIZE:
        return False
    req, flags, size = HEADER[order].unpack_from(data, off)
    return (
        flags & ~FLAGS_KNOWN == 0
        and flags & FLAG_VERSION_MASK == VERSION
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
    flags = {
        f
        for f in range(FLAGS_KNOWN + 1)
        if f & ~FLAGS_KNOWN == 0 and f & FLAG_VERSION_MASK == VERSION
    }
    if max(codes) > 0xFF or FLAGS_KNOWN > 0xFF:  # not the case today; stay exact anyway
        return re.compile(b"(?s).{%d}" % HEADER_SIZE)
    zeros = b"\\x00\\x00\\x00"
    req, flg = _byte_class(codes), _byte_class(flags)
    head = req + zeros + flg + zeros if order == "<" else zeros + req + zeros + flg
    return re.compile(head + _u32_at_most(MAX_PAYLOAD, order))


_BATCH = 1024  # messages cut from a buffer at a time (StreamFramer.feed_iter)


class StreamFramer:
    """Reassemble the messages of one direction of one channel."""

    def __init__(self, channel: str = "main", order: str = "<") -> None:
        self.channel = channel
        self.order = order
        self._header = HEADER[order]
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
        """The messages ``data`` completes, as a list (see :meth:`feed_iter`)."""
        return list(self.feed_iter(data, fds, ts_ns, frame))

    def feed_iter(
        self, data: bytes, fds: tuple[str, ...], ts_ns: int, frame: int
    ) -> Iterator[RawMessage]:
        """The messages ``data`` completes, one at a time: a capture's packet may hold
        millions of small messages (a 64 MiB block: 5.6 M headers), which are never all
        alive at once.  Consume it to the end before feeding again (the buffer is
        trimmed after the last one)."""
        if not self._buf:
            head = one_message(data, self.order)
            if head is not None:
                # Fast path: the frame is exactly one whole message (what the proxy writes).
                if self._fds:  # fds of an earlier zero-byte frame, if any
                    fds = self._take_fds(0, len(data)) + fds
                msg = RawMessage(data, fds, ts_ns, frame, *head)
                if head[2] > MAX_PAYLOAD:
                    # The sender framed it whole (the proxy frames up to its own larger
                    # limit): decode it whole, flagged, instead of losing the framing.
                    msg.problems.append(
                        problem(
                            "oversize",
                            f"payload of {head[2]} bytes above the protocol maximum "
                            f"({MAX_PAYLOAD}); framed whole by the sender",
                        )
                    )
                yield msg
                return
        if not self._buf:
            self._ts = ts_ns
            self._frame = frame
        self._buf += data
        if fds:
            self._fds.append((len(self._buf) - 1, fds))
        buf = self._buf
        unpack = self._header.unpack_from
        pos = 0
        while True:
            spans, pos, over = cut_messages(buf, MAX_PAYLOAD, self.order, pos, _BATCH)
            for start, stop in spans:
                req, flags, size = unpack(buf, start)
                fds_of = self._take_fds(start, stop)
                yield RawMessage(bytes(buf[start:stop]), fds_of, self._ts, frame, req, flags, size)
                self._ts, self._frame = ts_ns, frame
            if len(spans) == _BATCH:
                continue  # (a full batch: more may follow)
            if over is None:
                break
            nxt = self._resync(buf, pos + 1)
            chunk = bytes(buf[pos:nxt])
            msg = RawMessage(chunk, self._take_fds(pos, nxt), self._ts, frame, raw=True)
            msg.problems.append(
                problem("oversize", f"header announces {over} payload bytes (max {MAX_PAYLOAD})")
            )
            msg.problems.append(
                problem(
                    "framing_lost",
                    f"{len(chunk)} bytes passed through raw"
                    + (", resynchronised on the next plausible header" if nxt < len(buf) else ""),
                )
            )
            yield msg
            pos = nxt
            self._ts, self._frame = ts_ns, frame
        if pos:
            del buf[:pos]
            self._fds = [(off - pos, f) for off, f in self._fds]

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


# -- decoding one framed message, stateless ------------------------------------------------
#
# What a message says on its own, given the decode context its connection had then: the
# session (vuinspect.session) runs these steps with its stateful pairing and checks in
# between (in the order the Wireshark dissector mirrors); the TUI re-decodes a painted row
# with :func:`decode_message` alone.

#: Decoded payloads kept per cache (real traffic repeats; the pipeline shares one).
CACHE_SIZE = 16384


def read_header(
    raw: RawMessage,
    channel: Channel,
    direction: Direction,
    order: str = "<",
    *,
    conn: int = 0,
    index: int = 0,
) -> tuple[Message, RequestSpec | None]:
    """The message as far as its header tells, with the header checks; and its request spec.

    Bytes that do not form a message become a ``raw`` message (spec None).
    """
    msg = Message(
        index,
        raw.frame,
        raw.ts_ns,
        conn,
        channel,
        direction,
        raw=raw.data,
        fds=raw.fds,
        big_endian=order == ">",
    )
    if raw.problems:
        msg.problems.extend(raw.problems)
    if raw.raw or raw.request is None or raw.flags is None:
        msg.kind, msg.name, msg.size = "raw", "RAW", len(raw.data)
        return msg, None
    flags = raw.flags
    msg.request, msg.flags, msg.size = raw.request, flags, raw.size
    msg.reply = reply = direction != ("f2b" if channel == "main" else "b2f")
    msg.need_reply = bool(flags & FLAG_NEED_REPLY)
    spec = BY_CHANNEL.get(channel, FRONTEND).get(raw.request)  # (lookup(), inline: per message)
    msg.name = spec.name if spec is not None else request_name(channel, raw.request)
    # (the usual flags, 0x5 on a reply and 0x1 or 0x9 on a request, have nothing to report)
    if (flags != REPLY_FLAGS) if reply else (flags & ~FLAG_NEED_REPLY != VERSION):
        check_header(msg)
    if spec is None:
        msg.problems.append(
            problem(
                "unknown_request",
                f"request id {raw.request} is not defined on the {channel} channel",
            )
        )
        payload = raw.data[HEADER_SIZE:]
        msg.payload = {"data": payload.hex()} if payload else {}
    return msg, spec


def check_header(msg: Message) -> None:
    """Version, reserved and REPLY flags (PROTOCOL.md §1.5)."""
    flags = msg.flags or 0
    if flags & FLAG_VERSION_MASK != VERSION:
        msg.problems.append(
            problem("bad_version", f"version bits are {flags & FLAG_VERSION_MASK}, not 1")
        )
    if flags & ~FLAGS_KNOWN:
        msg.problems.append(problem("reserved_flags", f"flags 0x{flags:x}"))
    if msg.reply and flags != REPLY_FLAGS:
        msg.problems.append(problem("reply_flags", f"flags 0x{flags:x} instead of 0x5"))
    elif not msg.reply and flags & FLAG_REPLY:
        msg.problems.append(
            problem(
                "wrong_direction",
                f"REPLY flag set on a message from the "
                f"{'front-end' if msg.channel == 'main' else 'back-end'}, which sends requests here",
            )
        )


def context_key(ctx: DecodeContext) -> tuple:
    """What of a decode context a payload's decoding depends on (a cache key part)."""
    return (ctx.order, ctx.device, ctx.packed, ctx.xen_mmap)


def decode_payload(
    msg: Message,
    spec: RequestSpec,
    ctx: DecodeContext,
    cache: dict[tuple, tuple] | None = None,
    ctx_key: tuple | None = None,
) -> None:
    """Choose the layout (request or reply) and decode the payload into ``msg``.

    With ``cache``, results are shared between identical payloads decoded in the
    same context (``ctx_key``, by default :func:`context_key`).
    """
    layouts = spec.reply if msg.reply else spec.request
    payload = msg.raw[HEADER_SIZE:]
    key = (id(layouts), payload, context_key(ctx) if ctx_key is None else ctx_key)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            msg.layout, msg.payload, problems = hit
            if problems:
                msg.problems.extend(problems)
            return
    layout = choose_layout(layouts, payload, ctx)
    if layout is None:
        problems = (
            [problem("wrong_size", f"{len(payload)} bytes where none are defined")]
            if payload
            else []
        )
        hit = (None, {"data": payload.hex()} if payload else {}, problems)
    else:
        values, problems = decode_layout(layout, payload, ctx)
        hit = (layout.name, values, problems)
    if cache is not None:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[key] = hit
    msg.layout, msg.payload, problems = hit
    if problems:
        msg.problems.extend(problems)


def label_fds(msg: Message, spec: RequestSpec) -> None:
    """Name the fds by their role in this request or reply ("kick: eventfd 7")."""
    if msg.fds:
        role = spec.reply_fd_role if msg.reply else spec.fd_role
        if role:
            msg.fds = tuple(f"{role}: {d}" for d in msg.fds)


def decode_message(
    raw: RawMessage,
    channel: Channel,
    direction: Direction,
    ctx: DecodeContext,
    *,
    conn: int = 0,
    index: int = 0,
    cache: dict[tuple, tuple] | None = None,
) -> Message:
    """One framed message decoded alone: header, payload, fd roles, the stateless problems.

    No pairing, latency or checks against negotiated state: those are the
    session's (:meth:`vuinspect.session.Session.handle`).
    """
    msg, spec = read_header(raw, channel, direction, ctx.order, conn=conn, index=index)
    if spec is not None:
        decode_payload(msg, spec, ctx, cache)
        label_fds(msg, spec)
    return msg
