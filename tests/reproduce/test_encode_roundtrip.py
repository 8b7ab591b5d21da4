"""encode(decode(msg)) == msg for every layout: intercept edits and ``corrupt`` rely on it.

The bytes are drawn field by field from the layout tables (counts consistent,
padding zero: what a well-formed peer sends), so a new layout is covered
without touching this file.  Both byte orders, and whole messages through the
decoder's own pipeline (layout chosen by the session, as in a capture).
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vuinspect.encode import encode_layout, message
from vuinspect.frames import Frame
from vuinspect.payload import DecodeContext, decode_layout
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.layouts import ALL_LAYOUTS, Array, Field, Layout, Tail
from vuinspect.protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS, MAX_PAYLOAD

MAX_ITEMS = 8
MAX_TAIL = 64
BY_NAME = {lay.name: lay for lay in ALL_LAYOUTS}
#: Examples per layout: a quick CI run, x20 with VUINSPECT_RELIABILITY=full.
EXAMPLES = 500 if os.environ.get("VUINSPECT_RELIABILITY") == "full" else 25
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _count_limits(layout: Layout) -> dict[str, int]:
    out = {}
    for f in layout.fields:
        if isinstance(f, Array) and isinstance(f.count, str):
            out[f.count] = min(f.max_count, MAX_ITEMS)
        elif isinstance(f, Tail) and f.length:
            out[f.length] = MAX_TAIL
    return out


def _plain(layout: Layout) -> bool:
    """Fixed fields only, none of them padding, a count or a layout selector."""
    return (
        layout.when is None
        and not _count_limits(layout)
        and all(isinstance(f, Field) and f.display != "padding" for f in layout.fields)
    )


@st.composite
def layout_bytes(draw: st.DrawFn, layout: Layout, order: str) -> bytes:
    """Well-formed payload bytes for ``layout``: any field values, consistent counts."""
    limits = _count_limits(layout)
    counts: dict[str, int] = {}
    out = bytearray()
    for f in layout.fields:
        if isinstance(f, Field):
            if f.display == "padding":
                out += bytes(f.size)
            elif layout.when is not None and f.name == layout.when[0]:
                out += struct.pack(order + f.fmt, layout.when[1])  # what selects this layout
            elif f.name in limits:
                counts[f.name] = draw(st.integers(0, limits[f.name]))
                out += struct.pack(order + f.fmt, counts[f.name])
            else:
                out += draw(st.binary(min_size=f.size, max_size=f.size))
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else counts[f.count]
            if _plain(f.item):  # one draw for all items (256 of them in shmem_config)
                size = sum(x.size for x in f.item.fields if isinstance(x, Field))
                out += draw(st.binary(min_size=n * size, max_size=n * size))
                continue
            for _ in range(n):
                out += draw(layout_bytes(f.item, order))
        elif f.length is None:
            out += draw(st.binary(max_size=MAX_TAIL))
        else:
            out += draw(st.binary(min_size=counts[f.length], max_size=counts[f.length]))
    return bytes(out)


def test_every_layout_is_covered() -> None:
    named = {
        lay.name
        for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS)
        for lay in (*spec.request, *spec.reply)
    }
    assert named <= set(BY_NAME), named - set(BY_NAME)
    assert len(ALL_LAYOUTS) >= 30


@pytest.mark.parametrize("order", ["<", ">"], ids=["le", "be"])
@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=[lay.name for lay in ALL_LAYOUTS])
@SETTINGS
@given(data=st.data())
def test_layout_roundtrip(layout: Layout, order: str, data: st.DataObject) -> None:
    buf = data.draw(layout_bytes(layout, order))
    values, problems = decode_layout(layout, buf, DecodeContext(order=order))
    assert [p.code for p in problems] == []
    assert encode_layout(layout, values, order) == buf


def _messages() -> list[tuple[str, int, bool, Layout]]:
    out = []
    for channel, specs in (("main", FRONTEND_REQUESTS), ("backend", BACKEND_REQUESTS)):
        for spec in specs:
            for reply, layouts in ((False, spec.request), (True, spec.reply)):
                out += [(channel, spec.id, reply, lay) for lay in layouts]
    return out


MESSAGES = _messages()


@pytest.mark.parametrize(
    ("channel", "req_id", "reply", "layout"),
    MESSAGES,
    ids=[f"{c}-{r}-{'reply' if rep else 'req'}-{lay.name}" for c, r, rep, lay in MESSAGES],
)
@SETTINGS
@given(data=st.data())
def test_message_roundtrip(
    channel: str, req_id: int, reply: bool, layout: Layout, data: st.DataObject
) -> None:
    """A whole message through the Pipeline, then re-encoded with the layout it chose."""
    payload = data.draw(layout_bytes(layout, "<"))
    if len(payload) > MAX_PAYLOAD:
        return
    raw = message(req_id, payload, reply=reply)
    f2b = (channel == "main") != reply
    frame = Frame(1, 1, channel, "f2b" if f2b else "b2f", raw)  # type: ignore[arg-type]
    (msg,) = [m for m in Pipeline().run([frame]) if not m.is_event]
    assert msg.kind == "message" and msg.raw == raw
    chosen = BY_NAME[msg.layout]
    again = message(msg.request, encode_layout(chosen, msg.payload), flags=msg.flags)
    assert again == raw, (msg.layout, msg.payload)
