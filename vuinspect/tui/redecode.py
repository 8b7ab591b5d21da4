"""Decode one frame again, alone, given the decode context its session had then.

The TUI keeps no decoded messages for a big capture: it keeps compact per-frame
columns (what only the session knows: problems, pairing, latency, the context)
and rebuilds a :class:`Message` from the frame's bytes when a row is painted or
selected.  The decoding is the decoder's own stateless one
(:func:`vuinspect.decoder.decode_message`, which the session also runs); the
framing of a frame not yet seen by the session is the decoder's framer's.
"""

from __future__ import annotations

from vuinspect.decoder import RawMessage, StreamFramer
from vuinspect.decoder import decode_message as decode_raw
from vuinspect.frames import Frame
from vuinspect.framing import one_message
from vuinspect.message import Message
from vuinspect.payload import DecodeContext
from vuinspect.pipeline import event_message

__all__ = ["decode_frame", "event_message", "quick_decode"]


def decode_frame(
    data: bytes, fds: tuple[str, ...], frame: Frame, number: int, index: int, ctx: DecodeContext
) -> Message:
    """A frame holding exactly one message (as the session framed it), decoded alone.

    Bytes that are not one whole message are a raw message.  The problems are
    the stateless ones only: the caller sets the session's.
    """
    head = one_message(data, ctx.order)
    if head is None:
        raw = RawMessage(data, fds, frame.ts_ns, number, raw=True)
    else:
        raw = RawMessage(data, fds, frame.ts_ns, number, *head)
    return decode_raw(raw, frame.channel, frame.direction, ctx, conn=frame.conn, index=index)


def quick_decode(frame: Frame, number: int, ctx: DecodeContext) -> list[Message]:
    """Best effort for a frame the session has not seen yet: frame it alone, decode it alone."""
    if frame.kind != "data":
        return [event_message(frame, number, number)]
    framer = StreamFramer(frame.channel, ctx.order)
    raws = framer.feed(frame.data, frame.fds, frame.ts_ns, number) + framer.close()
    return [
        decode_raw(r, frame.channel, frame.direction, ctx, conn=frame.conn, index=number)
        for r in raws
    ]
