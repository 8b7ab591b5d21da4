"""What is built on the layout walk: decode, expected size, layout choice, encode (the walk
itself: tests/core/test_layout_walk.py)."""

from __future__ import annotations

import struct

import pytest

from vuinspect.encode import encode_layout
from vuinspect.payload import DecodeContext, choose_layout, decode_layout, expected_size
from vuinspect.protocol.layouts import ALL_LAYOUTS, CONFIG, MEM_TABLE, MEM_TABLE_XEN, RARP
from vuinspect.protocol.requests import lookup

REGION = struct.pack("<QQQQ", 0x1000, 0x2000, 0x7F00, 0)


def mem_table(nregions: int, present: int) -> bytes:
    return struct.pack("<II", nregions, 0) + REGION * present


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
