"""The layout walk and what is built on it: decode, expected size, layout choice, encode."""

from __future__ import annotations

import struct

import pytest

from vuinspect.encode import encode_layout
from vuinspect.layout_walk import ARRAY, END, FIELD, ITEM, TAIL, walk
from vuinspect.payload import DecodeContext, choose_layout, decode_layout, expected_size
from vuinspect.protocol.layouts import ALL_LAYOUTS, CONFIG, MEM_TABLE, MEM_TABLE_XEN, RARP
from vuinspect.protocol.requests import lookup

REGION = struct.pack("<QQQQ", 0x1000, 0x2000, 0x7F00, 0)


def mem_table(nregions: int, present: int) -> bytes:
    return struct.pack("<II", nregions, 0) + REGION * present


def steps(layout, buf, **kw) -> list[tuple]:
    return [(k, p, s, e, v) for k, p, _n, s, e, v in walk(layout, buf, "<", **kw)]


def test_walk_yields_fields_items_and_array_spans_in_wire_order() -> None:
    got = steps(MEM_TABLE, mem_table(2, 2))
    assert got[:3] == [
        (FIELD, "nregions", 0, 4, 2),
        (FIELD, "padding", 4, 8, b"\0" * 4),
        (ARRAY, "regions", 8, 72, 2),
    ]
    assert got[3] == (ITEM, "regions.0", 8, 40, 0)
    assert got[4] == (FIELD, "regions.0.guest_phys_addr", 8, 16, 0x1000)
    assert (ITEM, "regions.1", 40, 72, 1) in got
    assert got[-1] == (END, "regions", 8, 72, 2)


def test_walk_visits_only_whole_items_and_marks_missing_fields() -> None:
    got = steps(MEM_TABLE, mem_table(3, 1) + b"\1" * 20)  # one item and a bit
    assert (ARRAY, "regions", 8, 8 + 3 * 32, 3) in got
    assert got[-1] == (END, "regions", 8, 40, 1)
    assert steps(MEM_TABLE, b"\2\0")[0] == (FIELD, "nregions", 0, 4, None)


def test_walk_is_bounded_by_max_count_not_by_the_announced_count() -> None:
    got = steps(MEM_TABLE, mem_table(0xFFFFFFFF, 8) + REGION * 4)
    assert sum(1 for s in got if s[0] == ITEM) == 8
    assert sum(1 for s in got if s[0] == FIELD) == 2 + 8 * 4


def test_walk_tail_spans_its_length_or_the_rest() -> None:
    buf = struct.pack("<III", 0, 6, 0) + b"abc"
    assert steps(CONFIG, buf)[-1] == (TAIL, "data", 12, 18, 6)  # claims 6, 3 present
    assert steps(CONFIG, buf, descend=False)[-1] == (TAIL, "data", 12, 18, 6)


def test_whole_walk_reads_counts_from_the_bytes_a_builder_writes() -> None:
    buf = bytearray()
    seen = []
    for kind, path, node, start, end, _value in walk(MEM_TABLE, buf, "<", whole=True):
        seen.append((kind, path))
        if kind == FIELD:
            buf += struct.pack("<Q", 2 if path == "nregions" else 0)[: end - start]
            assert node.size == end - start
    assert seen.count((ITEM, "regions.1")) == 1 and (ITEM, "regions.2") not in seen
    assert len(buf) == 8 + 2 * 32


def test_expected_size() -> None:
    assert expected_size(MEM_TABLE, mem_table(2, 0), "<") == 72
    assert expected_size(MEM_TABLE, mem_table(99, 0), "<") == 8 + 8 * 32  # clamped
    assert expected_size(MEM_TABLE, b"\1", "<") is None  # the count is not there
    assert expected_size(CONFIG, struct.pack("<III", 0, 5, 0), "<") == 17
    assert expected_size(RARP, b"", "<") == 8


def test_decode_reports_counts_short_items_and_tails() -> None:
    ctx = DecodeContext()
    values, problems = decode_layout(MEM_TABLE, mem_table(9, 8), ctx)
    assert len(values["regions"]) == 8
    assert [p.code for p in problems] == ["bad_count"] and "at most 8" in problems[0].text
    values, problems = decode_layout(MEM_TABLE, mem_table(3, 1), ctx)
    assert values["nregions"] == 3 and len(values["regions"]) == 1
    assert any("3 items announced, only 1 present" in p.text for p in problems)
    values, problems = decode_layout(CONFIG, struct.pack("<III", 0, 6, 0) + b"abc", ctx)
    assert values["data"] == b"abc".hex()
    assert any("size = 6 but only 3 bytes follow" in p.text for p in problems)
    _, problems = decode_layout(RARP, b"\1" * 8, ctx)
    assert [p.code for p in problems] == ["nonzero_padding"]
    _, problems = decode_layout(RARP, b"\0" * 9, ctx)
    assert [p.code for p in problems] == ["wrong_size"]


def test_choose_layout_prefers_the_negotiated_xen_twin_and_a_fitting_size() -> None:
    spec = lookup("main", 5)  # SET_MEM_TABLE
    plain = mem_table(1, 1)
    xen = struct.pack("<II", 1, 0) + b"\0" * 48
    assert choose_layout(spec.request, plain, DecodeContext()) is MEM_TABLE
    assert choose_layout(spec.request, xen, DecodeContext(xen_mmap=True)) is MEM_TABLE_XEN


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=lambda lay: lay.name)
def test_encode_of_a_decode_gives_the_bytes_back(layout) -> None:
    order = "<"
    payload = encode_layout(layout, {}, order)
    assert expected_size(layout, payload, order) in (len(payload), None)
    values, _ = decode_layout(layout, payload, DecodeContext(order=order))
    assert encode_layout(layout, values, order) == payload
