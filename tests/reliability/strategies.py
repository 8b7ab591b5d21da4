"""Hypothesis strategies for vhost-user streams: well-formed, damaged and in between.

Values for well-formed payloads are built from the layout tables, so a new
request or layout is fuzzed without touching this file.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from hypothesis import strategies as st

from vuinspect.encode import encode_layout, message
from vuinspect.frames import Frame, event_frame
from vuinspect.fuzz.mutate import INTERESTING_FLAGS, INTERESTING_U32
from vuinspect.protocol.layouts import Array, Field, Layout, Tail
from vuinspect.protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS, MAX_PAYLOAD

SPECS = (*FRONTEND_REQUESTS, *BACKEND_REQUESTS)
u32 = st.one_of(st.sampled_from(INTERESTING_U32), st.integers(0, 2**32 - 1))


def _int_range(fmt: str) -> tuple[int, int]:
    bits = struct.calcsize("<" + fmt) * 8
    if fmt.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@st.composite
def layout_values(draw: st.DrawFn, layout: Layout, max_items: int = 3) -> dict[str, Any]:
    """Field values for ``layout`` that encode to a well-formed payload."""
    values: dict[str, Any] = {}
    for f in layout.fields:
        if isinstance(f, Field):
            if f.display == "padding":
                continue
            if f.is_bytes:
                raw = draw(st.binary(min_size=f.size, max_size=f.size))
                if f.display == "uuid":
                    values[f.name] = str(uuid.UUID(bytes=raw))
                elif f.display == "mac":
                    values[f.name] = ":".join(f"{b:02x}" for b in raw)
                else:
                    values[f.name] = raw.hex()
            else:
                lo, hi = _int_range(f.fmt)
                values[f.name] = draw(st.one_of(st.integers(lo, hi), st.sampled_from((lo, 0, hi))))
        elif isinstance(f, Array):
            if isinstance(f.count, int):
                values[f.name] = [{} for _ in range(f.count)]
                continue
            n = draw(st.integers(0, min(max_items, f.max_count)))
            values[f.count] = n
            values[f.name] = [draw(layout_values(f.item)) for _ in range(n)]
        elif isinstance(f, Tail):
            data = draw(st.binary(max_size=64))
            values[f.name] = data.hex()
            if f.length:
                values[f.length] = len(data)
    if layout.when is not None:
        values[layout.when[0]] = layout.when[1]
    return values


@st.composite
def well_formed(draw: st.DrawFn, order: str = "<") -> tuple[str, bool, bytes, int]:
    """(channel, is_reply, message bytes, fd count) for any request or reply layout."""
    spec = draw(st.sampled_from(SPECS))
    reply = bool(spec.reply) and draw(st.booleans())
    layouts = spec.reply if reply else spec.request
    payload = b""
    if layouts:
        lay = draw(st.sampled_from(layouts))
        payload = encode_layout(lay, draw(layout_values(lay)), order)
    lo, hi = spec.reply_fds if reply else spec.fds
    nfds = draw(st.integers(max(lo, 0), hi if hi >= 0 else 8))
    need = draw(st.booleans())
    return (
        spec.channel,
        reply,
        message(spec.id, payload, reply=reply, need_reply=need, order=order),
        nfds,
    )


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A header that may lie (size, flags, request) and a payload that may not match it."""
    request = draw(st.one_of(st.integers(0, 50), u32))
    flags = draw(st.one_of(st.sampled_from(INTERESTING_FLAGS), u32))
    size = draw(
        st.one_of(
            st.integers(0, 64),
            st.sampled_from((MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1)),
            u32,
        )
    )
    have = draw(st.sampled_from(("exact", "short", "long")))
    n = min(size, MAX_PAYLOAD + 16)
    if have == "short":
        n = draw(st.integers(0, max(0, n - 1)))
    elif have == "long":
        n += draw(st.integers(1, 40))
    rnd = draw(st.randoms(use_true_random=False))
    return struct.pack("<III", request, flags, size) + rnd.randbytes(n)


@st.composite
def streams(draw: st.DrawFn, garbage: bool = True, max_messages: int = 12) -> list[Frame]:
    """Frames of one or two connections: messages on the right channel and direction,
    maybe damaged ones and garbage between them, fds anywhere, split at random points."""
    frames: list[Frame] = []
    conns = draw(st.sampled_from(((1,), (1, 2))))
    order = draw(st.sampled_from(("little", "little", "big")))  # the capturing host's
    for c in conns:
        frames.append(event_frame("open", 1, c, {"label": f"fuzz{c}", "byteorder": order}))
    ts = 2
    parts = [well_formed("<" if order == "little" else ">")]
    if garbage:
        parts += [
            damaged().map(lambda d: ("main", False, d, 0)),
            st.binary(min_size=1, max_size=30).map(lambda d: ("main", False, d, 0)),
        ]
    for _ in range(draw(st.integers(1, max_messages))):
        channel, reply, data, nfds = draw(st.one_of(*parts))
        if garbage and draw(st.integers(0, 9)) == 0:
            channel, reply = draw(st.sampled_from(("main", "backend"))), draw(st.booleans())
            nfds = draw(st.sampled_from((0, 1, 2, 9, 253)))
        requester = "f2b" if channel == "main" else "b2f"
        direction = ("b2f" if requester == "f2b" else "f2b") if reply else requester
        fds = tuple(f"eventfd#{ts}.{k}" for k in range(nfds))
        conn = draw(st.sampled_from(conns))
        # cut the message into 1-4 writes; its fds travel with the last one
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=3))))
        bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
        for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            ts += 1
            frames.append(
                Frame(
                    ts,
                    conn,
                    channel,
                    direction,
                    data[a:b],  # type: ignore[arg-type]
                    fds if k == len(bounds) - 2 else (),
                )
            )
    if draw(st.booleans()):
        for c in conns:
            frames.append(event_frame("close", ts + 1, c, {"reason": "end"}))
    return frames
