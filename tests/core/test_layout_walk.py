"""layout_walk.walk, the one walk over a payload layout: steps in wire order, only whole
items, bounded by max_count, tails, a builder's whole walk, offsets within the buffer."""

from __future__ import annotations

import struct

from vuinspect.layout_walk import ARRAY, END, FIELD, ITEM, TAIL, item_size, walk
from vuinspect.protocol.layouts import ALL_LAYOUTS, CONFIG, MEM_TABLE

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


def test_big_endian_values_and_item_size() -> None:
    buf = struct.pack(">II", 1, 0) + struct.pack(">QQQQ", 0x1000, 0x2000, 0x7F00, 0)
    got = steps_order(MEM_TABLE, buf, ">")
    assert got[0] == (FIELD, "nregions", 0, 4, 1)
    assert (FIELD, "regions.0.memory_size", 16, 24, 0x2000) in got
    assert item_size(MEM_TABLE.fields[-1].item) == 32


def test_no_step_reaches_past_the_buffer_of_any_layout() -> None:
    """Every layout over every short buffer: spans stay within the bytes present (a
    field not all there has no value), and the walk ends."""
    for layout in ALL_LAYOUTS:
        for n in range(0, 80, 3):
            buf = bytes(range(n))
            for kind, path, _node, start, end, value in walk(layout, buf, "<"):
                assert 0 <= start <= end, (layout.name, n, path)
                if kind == FIELD:
                    assert (value is None) == (end > n), (layout.name, n, path)
                elif kind == ITEM:  # only whole items are visited
                    assert end <= n, (layout.name, n, path)


def steps_order(layout, buf, order: str) -> list[tuple]:
    return [(k, p, s, e, v) for k, p, _n, s, e, v in walk(layout, buf, order)]
