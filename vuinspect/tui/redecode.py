"""Decode one frame again, alone, given the decode context its session had then.

The TUI keeps no decoded messages for a big capture: it keeps compact per-frame
columns (what only the session knows: problems, pairing, latency, the context)
and rebuilds a :class:`Message` from the frame's bytes when a row is painted or
selected.  The rules mirror :meth:`vuinspect.session.Session.handle`; a test
checks that both give the same JSON for every message of the sample captures.
"""

from __future__ import annotations

import struct

from vuinspect.frames import Frame
from vuinspect.message import Message
from vuinspect.payload import DecodeContext, choose_layout, decode_layout
from vuinspect.pipeline import event_message
from vuinspect.protocol.requests import (
    FLAG_NEED_REPLY,
    HEADER_SIZE,
    MAX_PAYLOAD,
    lookup,
    request_name,
)


def decode_message(
    data: bytes, fds: tuple[str, ...], frame: Frame, number: int, index: int, ctx: DecodeContext
) -> Message:
    """One whole framed message (header + payload) with its fds; problems are left out."""
    msg = Message(
        index,
        number,
        frame.ts_ns,
        frame.conn,
        frame.channel,
        frame.direction,
        raw=data,
        fds=fds,
        big_endian=ctx.order == ">",
    )
    if len(data) < HEADER_SIZE:
        msg.kind, msg.name, msg.size = "raw", "RAW", len(data)
        return msg
    request, flags, size = struct.unpack_from(ctx.order + "III", data, 0)
    if size > MAX_PAYLOAD and len(data) != HEADER_SIZE + size:
        msg.kind, msg.name, msg.size = "raw", "RAW", len(data)
        return msg
    msg.request, msg.flags, msg.size = request, flags, size
    channel = frame.channel
    requester = "f2b" if channel == "main" else "b2f"
    msg.reply = frame.direction != requester
    msg.need_reply = bool(flags & FLAG_NEED_REPLY)
    spec = lookup(channel, request)
    msg.name = request_name(channel, request)
    payload = data[HEADER_SIZE:]
    if spec is None:
        msg.payload = {"data": payload.hex()} if payload else {}
        return msg
    layouts = spec.reply if msg.reply else spec.request
    layout = choose_layout(layouts, payload, ctx)
    if layout is None:
        if payload:
            msg.payload = {"data": payload.hex()}
    else:
        msg.layout = layout.name
        msg.payload, _ = decode_layout(layout, payload, ctx)
    if fds:
        role = spec.reply_fd_role if msg.reply else spec.fd_role
        if role:
            msg.fds = tuple(f"{role}: {d}" for d in fds)
    return msg


def split_frame(data: bytes, order: str = "<") -> list[bytes] | None:
    """The whole messages in ``data``, or None when it does not frame cleanly.

    A frame that is exactly one message is that message even above MAX_PAYLOAD
    (the sender framed it whole), as the decoder's fast path takes it.
    """
    if (
        len(data) >= HEADER_SIZE
        and len(data) == HEADER_SIZE + struct.unpack_from(order + "I", data, 8)[0]
    ):
        return [data]
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER_SIZE:
            return None
        size = struct.unpack_from(order + "I", data, pos + 8)[0]
        if size > MAX_PAYLOAD or pos + HEADER_SIZE + size > len(data):
            return None
        out.append(data[pos : pos + HEADER_SIZE + size])
        pos += HEADER_SIZE + size
    return out


def quick_decode(frame: Frame, number: int, ctx: DecodeContext) -> list[Message]:
    """Best effort for a frame the session has not seen yet: frame it alone."""
    if frame.kind != "data":
        return [event_message(frame, number, number)]
    parts = split_frame(frame.data, ctx.order)
    if not parts:
        msg = Message(
            number,
            number,
            frame.ts_ns,
            frame.conn,
            frame.channel,
            frame.direction,
            kind="raw",
            name="RAW",
            raw=frame.data,
            fds=frame.fds,
            size=len(frame.data),
        )
        return [msg]
    out = []
    for i, part in enumerate(parts):
        fds = frame.fds if i == len(parts) - 1 else ()
        out.append(decode_message(part, fds, frame, number, number, ctx))
    return out
