"""Descriptor chains, indirect tables, loops, request headers and used-id checks."""

from __future__ import annotations

import struct

import pytest

from vuinspect.dataplane import PackedTracker, SplitTracker, in_flight, sample
from vuinspect.dataplane.inflight import in_flight_chains, walk_packed, walk_split
from vuinspect.dataplane.rings import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE

from .guestimage import GPA, GuestImage, PackedRing, SplitRing

BUF = GPA + 0x8000
NEXT, WRITE, INDIRECT = DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT


def codes(chain) -> list[str]:
    return [p.code for p in chain.problems]


def test_in_flight_wraps():
    assert in_flight(5, 3) == 2
    assert in_flight(2, 0xFFFE) == 4
    assert in_flight(7, 7) == 0


def blk_request(img: GuestImage, ring: SplitRing, head: int, rtype: int, sector: int) -> None:
    """A virtio-blk request: header, data, status, as Linux lays it out."""
    hdr = BUF + 0x100 * head
    img.pack(hdr, "IIQ", rtype, 0, sector)
    ring.set_desc(head, hdr, 16, NEXT, head + 1)
    ring.set_desc(head + 1, BUF + 0x1000, 512, NEXT | (WRITE if rtype == 0 else 0), head + 2)
    ring.set_desc(head + 2, BUF + 0x2000 + head, 1, WRITE, 0)


def test_split_chain_with_blk_header(guest):
    img, mem = guest
    ring = SplitRing(img, 16)
    blk_request(img, ring, 0, 1, 2048)  # OUT
    blk_request(img, ring, 3, 0, 77)  # IN
    ring.add_avail(0, 3)
    chains = in_flight_chains(mem, ring.config(), sample(mem, ring.config()), "blk")
    assert [c.head for c in chains] == [0, 3]
    out, inp = chains
    assert [d.index for d in out.descs] == [0, 1, 2] and codes(out) == []
    assert out.header["type_name"] == "OUT" and out.header["sector"] == 2048
    assert inp.header["type_name"] == "IN" and inp.header["sector"] == 77
    assert inp.descs[1].flag_names == ["NEXT", "WRITE"]
    assert (out.readable, out.writable) == (16 + 512, 1)
    assert inp.to_json()["header"]["type"] == 0


def test_net_and_fs_headers(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    img.pack(BUF, "BBHHHHH", 1, 4, 54, 1448, 34, 16, 3)
    ring.set_desc(0, BUF, 12 + 1500, 0)
    img.pack(BUF + 0x1000, "IIQQIIIHH", 80, 15, 0xABC, 1, 1000, 1000, 42, 0, 0)
    ring.set_desc(1, BUF + 0x1000, 40, NEXT, 2)
    ring.set_desc(2, BUF + 0x2000, 4096, WRITE, 0)
    net = walk_split(mem, ring.config(), 0, "net")
    assert net.header["gso_type_name"] == "TCPV6" and net.header["needs_csum"]
    assert net.header["num_buffers"] == 3
    fs = walk_split(mem, ring.config(), 1, "fs")
    assert (fs.header["opcode_name"], fs.header["unique"], fs.header["nodeid"]) == (
        "READ",
        0xABC,
        1,
    )
    assert walk_split(mem, ring.config(), 1, None).header is None
    short = ring.config()
    ring.set_desc(3, BUF, 8, 0)  # too short for any header
    assert walk_split(mem, short, 3, "blk").header is None


def test_indirect_chain(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    table = BUF + 0x3000
    img.pack(BUF, "IIQ", 4, 0, 0)  # FLUSH
    for i, (addr, length, flags, nxt) in enumerate(
        [(BUF, 16, NEXT, 1), (BUF + 0x100, 1, WRITE, 0)]
    ):
        img.pack(table + 16 * i, "QIHH", addr, length, flags, nxt)
    ring.set_desc(2, table, 32, INDIRECT)
    chain = walk_split(mem, ring.config(), 2, "blk")
    assert codes(chain) == []
    assert [(d.index, d.indirect_table) for d in chain.descs] == [(2, False), (0, True), (1, True)]
    assert chain.header["type_name"] == "FLUSH" and chain.writable == 1


@pytest.mark.parametrize(
    "setup,code",
    [
        ([(0, NEXT, 1), (1, NEXT, 2), (2, NEXT, 0)], "desc_loop"),
        ([(0, NEXT, 0)], "desc_loop"),
        ([(0, NEXT, 9)], "desc_bad_next"),
        ([(0, INDIRECT | NEXT, 1)], "desc_bad_indirect"),
    ],
)
def test_corrupt_split_chains(guest, setup, code):
    img, mem = guest
    ring = SplitRing(img, 4)
    for i, flags, nxt in setup:
        ring.set_desc(i, BUF, 32 if flags & INDIRECT else 8, flags, nxt)
    chain = walk_split(mem, ring.config(), 0)
    assert codes(chain) == [code]
    assert len(chain.descs) <= 4


def test_indirect_loops_nesting_and_bad_sizes(guest):
    img, mem = guest
    ring = SplitRing(img, 8)
    table = BUF + 0x3000
    img.pack(table, "QIHH", BUF, 8, NEXT, 1)
    img.pack(table + 16, "QIHH", BUF, 8, NEXT, 0)  # loops inside the table
    ring.set_desc(0, table, 32, INDIRECT)
    assert codes(walk_split(mem, ring.config(), 0)) == ["desc_loop"]
    img.pack(table, "QIHH", table, 32, INDIRECT, 0)  # nested indirect
    assert codes(walk_split(mem, ring.config(), 0)) == ["desc_bad_indirect"]
    ring.set_desc(1, table, 24, INDIRECT)  # not a multiple of 16
    assert codes(walk_split(mem, ring.config(), 1)) == ["desc_bad_indirect"]
    ring.set_desc(2, table, 16 * 1000, INDIRECT)  # a long table of NEXT-chained entries
    for i in range(20):
        img.pack(table + 16 * i, "QIHH", BUF, 8, NEXT, i + 1)
    chain = walk_split(mem, ring.config(), 2)
    assert codes(chain) == ["desc_chain_too_long"] and len(chain.descs) == 9


def test_out_of_region_addresses(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.set_desc(0, 0xDEAD_0000, 16, NEXT, 1)
    ring.set_desc(1, GPA + img.size - 4, 16, 0)
    chain = walk_split(mem, ring.config(), 0, "blk")
    assert codes(chain) == ["guest_addr_unmapped", "guest_read_crosses_region"]
    assert chain.header is None
    ring.set_desc(2, 0xDEAD_0000, 32, INDIRECT)  # an indirect table nowhere
    assert codes(walk_split(mem, ring.config(), 2)) == ["guest_addr_unmapped"]
    assert codes(walk_split(mem, ring.config(), 4)) == ["ring_bad_head"]


def test_descriptor_addresses_are_guest_physical_even_when_rings_are_uva(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.set_desc(0, img.uva_of(BUF), 16, 0)  # a UVA in a descriptor is wrong
    assert codes(walk_split(mem, ring.config("uva"), 0)) == ["guest_addr_unmapped"]


def test_buffers_through_the_iotlb(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    iova = 0xC000_0000
    img.pack(BUF, "IIQ", 1, 0, 99)
    ring.set_desc(0, iova + (BUF - GPA), 16, 0)
    mem.iommu = True
    mem.iotlb_update(img.uva_of(ring.desc), 0x1000, img.uva_of(ring.desc))  # identity
    cfg = ring.config("uva")  # ring addresses equal to their IOVAs here (identity entry)
    assert codes(walk_split(mem, cfg, 0, "blk")) == ["iotlb_miss"]
    mem.iotlb_update(iova, img.size, img.uva)
    chain = walk_split(mem, cfg, 0, "blk")
    assert codes(chain) == [] and chain.header["sector"] == 99


def test_used_id_that_was_not_available(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    cfg = ring.config()
    tracker = SplitTracker()
    ring.add_avail(0, 1)
    assert tracker.update(mem, cfg, sample(mem, cfg)) == []
    ring.push_used(1)
    ring.push_used(0)
    assert tracker.update(mem, cfg, sample(mem, cfg)) == []
    ring.add_avail(2, 3)
    ring.push_used(2)
    ring.push_used(0)  # 0 was already returned and not made available again
    problems = tracker.update(mem, cfg, sample(mem, cfg))
    assert [p.code for p in problems] == ["used_id_not_available"]
    assert "used id 0" in problems[0].text
    ring.add_avail(1)
    ring.push_used(9)
    assert [p.code for p in tracker.update(mem, cfg, sample(mem, cfg))] == ["ring_bad_head"]


def test_packed_chains_in_flight(guest):
    img, mem = guest
    ring = PackedRing(img, 4)
    img.pack(BUF, "IIQ", 1, 0, 5)
    table = BUF + 0x3000
    img.pack(table, "QIHH", BUF, 16, 0, 0)
    img.pack(table + 16, "QIHH", BUF + 0x200, 1, WRITE, 0)
    ring.make_available(1, [(BUF, 16, 0), (BUF + 0x100, 1, WRITE)])
    ring.make_available(2, [(table, 32, INDIRECT)])
    cfg = ring.config()
    s = sample(mem, cfg, 0, PackedTracker(4))
    chains = in_flight_chains(mem, cfg, s, "blk")
    assert [c.head for c in chains] == [0, 2]
    assert [len(c.descs) for c in chains] == [2, 3]
    assert all(c.header["type_name"] == "OUT" and c.header["sector"] == 5 for c in chains)
    assert all(codes(c) == [] for c in chains)
    assert chains[1].descs[1].indirect_table


def test_packed_corrupt_chains(guest):
    img, mem = guest
    ring = PackedRing(img, 4)
    for k in range(4):
        ring.write_desc(k, BUF, 8, k, NEXT | 1 << 7)
    chain = walk_packed(mem, ring.config(), 1)
    assert codes(chain) == ["desc_chain_too_long"] and len(chain.descs) == 4
    ring.write_desc(0, BUF, 20, 0, INDIRECT | 1 << 7)
    assert codes(walk_packed(mem, ring.config(), 0)) == ["desc_bad_indirect"]
    ring.write_desc(0, BUF + 0x3000, 16 * 100, 0, INDIRECT | 1 << 7)
    chain = walk_packed(mem, ring.config(), 0)
    assert "desc_chain_too_long" in codes(chain) and len(chain.descs) == 1 + 4
    assert codes(walk_packed(mem, ring.config(), 7)) == ["ring_bad_head"]


def test_walk_budget_bounds_the_work(guest):
    img, mem = guest
    ring = SplitRing(img, 256)
    for i in range(256):
        ring.set_desc(i, BUF, 8, NEXT, (i + 1) % 256)
    ring.set_avail_idx(200)
    s = sample(mem, ring.config())
    chains = in_flight_chains(mem, ring.config(), s, max_descs=1000)
    assert sum(len(c.descs) for c in chains) <= 1000
    assert chains[-1].truncated or codes(chains[-1])


def test_header_struct_sizes():
    from vuinspect.dataplane.headers import BLK_REQ, FUSE_IN, NET_HDR, header_size

    assert (header_size(BLK_REQ), header_size(NET_HDR), header_size(FUSE_IN)) == (16, 12, 40)
    assert struct.calcsize("<IIQQIIIHH") == 40


def test_out_of_order_completion_lists_the_heads_really_outstanding(guest):
    img, mem = guest
    ring = SplitRing(img, 8)
    cfg = ring.config()
    for h in range(3):
        ring.set_desc(h, BUF + 0x100 * h, 16, 0)
    tracker = SplitTracker()
    ring.add_avail(0, 1, 2)
    tracker.update(mem, cfg, sample(mem, cfg))
    ring.push_used(1)  # the middle one completes first
    s = sample(mem, cfg)
    assert tracker.update(mem, cfg, s) == []
    assert [c.head for c in in_flight_chains(mem, cfg, s)] == [1, 2]  # by slot: a guess
    assert [c.head for c in in_flight_chains(mem, cfg, s, tracker=tracker)] == [0, 2]


def test_in_order_batches_are_not_unknown_ids(guest):
    from dataclasses import replace

    img, mem = guest
    ring = SplitRing(img, 8)
    cfg = replace(ring.config(), in_order=True)
    tracker = SplitTracker()
    ring.add_avail(0, 1, 2)
    tracker.update(mem, cfg, sample(mem, cfg))
    ring.img.pack(ring.used + 4 + 8 * 2, "II", 2, 0)  # one element for the batch of three
    ring.set_used_idx(3)
    for _ in range(2):
        assert tracker.update(mem, cfg, sample(mem, cfg)) == []
        ring.add_avail(0, 1, 2)
        ring.img.pack(ring.used + 4 + 8 * 5, "II", 2, 0)
        ring.set_used_idx(6)
    without = SplitTracker()  # the same ring read as if IN_ORDER were not negotiated
    ring2 = SplitRing(img, 8, base=GPA + 0x4000)
    plain = ring2.config()
    ring2.add_avail(0, 1, 2)
    without.update(mem, plain, sample(mem, plain))
    ring2.push_used(2)
    ring2.push_used(2)
    assert [p.code for p in without.update(mem, plain, sample(mem, plain))] == [
        "used_id_not_available"
    ]
