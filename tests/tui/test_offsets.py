"""Field byte ranges: the bytes the hex pane highlights decode to the value the tree shows."""

from __future__ import annotations

import struct

import pytest

from vuinspect import samples as core_samples
from vuinspect.capture import read_frames
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.layouts import ALL_LAYOUTS, Array, Field, Layout
from vuinspect.render import tree
from vuinspect.tui.offsets import field_ranges, range_for

from .conftest import REAL_CAPTURES

LAYOUTS = {lay.name: lay for lay in ALL_LAYOUTS}


def plain_fields(layout: Layout) -> tuple[set[str], set[str]]:
    """(names of real fields, names derived from bitfields) of a layout, arrays included."""
    names, derived = set(), set()
    for f in layout.fields:
        if isinstance(f, Field):
            names.add(f.name)
            derived.update(sub for sub, _ in f.bitfields)
        elif isinstance(f, Array):
            n, d = plain_fields(f.item)
            names |= n
            derived |= d
    return names - derived, derived


def value_at(payload: dict, key: str) -> object:
    obj: object = payload
    for part in key.split(".")[1:]:
        if isinstance(obj, list):
            obj = obj[int(part)]
        elif isinstance(obj, dict):
            obj = obj.get(part)
    return obj


def messages() -> list[Message]:
    out = list(Pipeline().run(core_samples.every_message()))
    for name in ("blk", "fs", "net"):
        path = REAL_CAPTURES / f"{name}.pcapng"
        if path.exists():
            out += list(Pipeline().run(read_frames(path)))
    return [m for m in out if m.kind == "message"]


def test_every_tree_row_of_every_message_has_a_range() -> None:
    for msg in messages():
        ranges = field_ranges(msg)
        for _depth, key, _text in tree(msg):
            if key.startswith(("header", "request", "flags", "size", "payload")):
                assert range_for(ranges, key) is not None, (msg.name, key)


def test_highlighted_bytes_decode_to_the_shown_value() -> None:
    checked = 0
    for msg in messages():
        layout = LAYOUTS.get(msg.layout or "")
        if layout is None:
            continue
        real, _ = plain_fields(layout)
        order = ">" if msg.big_endian else "<"
        for key, (lo, hi) in field_ranges(msg).items():
            last = key.rsplit(".", 1)[-1]
            value = value_at(msg.payload, key) if key.startswith("payload.") else None
            if last not in real or not isinstance(value, int) or isinstance(value, bool):
                continue
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[hi - lo]
            raw = msg.raw[lo:hi]
            assert value in (
                struct.unpack(order + code, raw)[0],
                struct.unpack(order + code.lower(), raw)[0],
            ), (msg.name, key)
            checked += 1
    assert checked > 200


def test_header_ranges() -> None:
    msg = next(m for m in messages() if m.name == "SET_MEM_TABLE")
    r = field_ranges(msg)
    assert r["request"] == (0, 4) and r["flags"] == (4, 8) and r["size"] == (8, 12)
    assert r["payload.regions.1"] == (12 + 8 + 32, 12 + 8 + 64)
    assert range_for(r, "payload.regions.1.memory_size") == (12 + 8 + 32 + 8, 12 + 8 + 32 + 16)


@pytest.mark.parametrize("kind", ["open", "close"])
def test_events_have_no_ranges(kind: str) -> None:
    msg = next(m for m in Pipeline().run(core_samples.device_start()) if m.kind == kind)
    assert field_ranges(msg) == {}
