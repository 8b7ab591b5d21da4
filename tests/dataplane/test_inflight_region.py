"""The INFLIGHT_SHMFD buffer (SET_INFLIGHT_FD) read from a memfd the test lays out as
libvhost-user / DPDK do: per-queue regions, descriptors marked in flight, hostile sizes."""

from __future__ import annotations

import mmap
import os

import pytest

from vuinspect.dataplane.inflight_region import (
    PACKED_DESC,
    PACKED_HEADER,
    SPLIT_DESC,
    SPLIT_HEADER,
    InflightRegion,
)
from vuinspect.dataplane.sampler import Sampler
from vuinspect.dataplane.text import detail_lines, ring_summary
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline
from vuinspect.tui.queues import chains_text

from .guestimage import GPA, GuestImage, SplitRing, fd_count, maps_mentioning
from .test_sampler import setup


def split_stride(queue_size: int) -> int:
    """libvhost-user's vu_inflight_queue_size: states + u16, rounded up to 64 bytes."""
    return (16 * queue_size + 2 + 63) & ~63


class Buffer:
    """A memfd holding ``num_queues`` split queue regions (as GET_INFLIGHT_FD hands out)."""

    def __init__(self, num_queues: int, queue_size: int, name: str = "vuinspect-inflight"):
        self.stride = split_stride(queue_size)
        self.size = self.stride * num_queues
        self.num_queues, self.queue_size = num_queues, queue_size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.mm = mmap.mmap(self.fd, self.size)
        for q in range(num_queues):
            self.header(q)

    def header(self, q: int, version: int = 1, desc_num: int | None = None, batch: int = 0,
               used: int = 0) -> None:  # fmt: skip
        n = self.queue_size if desc_num is None else desc_num
        SPLIT_HEADER.pack_into(self.mm, q * self.stride, 0, version, n, batch, used)

    def mark(self, q: int, desc: int, counter: int, nxt: int = 0, on: bool = True) -> None:
        at = q * self.stride + SPLIT_HEADER.size + desc * SPLIT_DESC.size
        SPLIT_DESC.pack_into(self.mm, at, int(on), nxt, counter)

    def region(self, **kw: int) -> InflightRegion:
        args = {
            "mmap_size": self.size,
            "mmap_offset": 0,
            "num_queues": self.num_queues,
            "queue_size": self.queue_size,
        }
        args.update(kw)
        return InflightRegion.open(self.fd, **args)

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


def test_split_queues_marked_descriptors_in_counter_order() -> None:
    buf = Buffer(2, 8)
    assert buf.stride == 192  # (a DPDK log: queue_size 128 -> 2112 bytes a queue)
    try:
        buf.header(1, batch=2, used=4)
        buf.mark(1, 3, counter=5)
        buf.mark(1, 1, counter=7)
        buf.mark(1, 6, counter=2, nxt=7)
        buf.mark(1, 5, counter=1, on=False)  # done: not in flight
        r = buf.region()
        assert r.mapped and not r.problems
        q = r.queue(1)
        assert (q.version, q.desc_num, q.used_idx, q.count) == (1, 8, 4, 3)
        assert q.header == {"last_batch_head": 2}
        assert [(d["index"], d["counter"], d["next"]) for d in q.descs] == [
            (6, 2, 7),
            (3, 5, 0),
            (1, 7, 0),
        ]
        assert r.queue(0).count == 0 and not r.queue(0).problems
        assert [d["index"] for d in r.queue(1, max_descs=2).descs] == [6, 3]  # listing bound
        assert r.queue(1, max_descs=2).count == 3  # ... all counted
        j = q.to_json()
        assert j["queue"] == 1 and j["layout"] == "split" and "problems" not in j
        # the back-end writes on: a later read sees it (MAP_SHARED)
        buf.mark(1, 3, counter=5, on=False)
        assert r.queue(1).count == 2
        r.close()
        assert not r.mapped and r.queue(1).problems[0].code == "inflight_bad_region"
    finally:
        buf.close()


def test_packed_queue() -> None:
    queue_size = 4
    stride = (PACKED_HEADER.size + PACKED_DESC.size * queue_size + 63) & ~63
    fd = os.memfd_create("vuinspect-inflight-packed", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, stride)
        with mmap.mmap(fd, stride) as mm:
            PACKED_HEADER.pack_into(mm, 0, 0, 1, queue_size, 3, 1, 9, 8, 1, 0)
            at = PACKED_HEADER.size + 2 * PACKED_DESC.size
            PACKED_DESC.pack_into(mm, at, 1, 3, 2, 1, 11, 5, 0x80, 512, GPA + 0x2000)
            q = InflightRegion.open(fd, stride, 0, 1, queue_size).queue(0, packed=True)
        assert (q.layout, q.version, q.desc_num, q.used_idx, q.count) == ("packed", 1, 4, 9, 1)
        assert q.header["free_head"] == 3 and q.header["old_used_idx"] == 8
        assert q.header["used_wrap_counter"] == 1 and q.header["old_used_wrap_counter"] == 0
        (d,) = q.descs
        assert (d["index"], d["id"], d["len"], d["addr"], d["counter"]) == (
            2,
            5,
            512,
            GPA + 0x2000,
            11,
        )
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"mmap_size": 0}, "inflight_bad_region"),
        ({"num_queues": 0}, "inflight_bad_region"),
        ({"mmap_size": 1 << 62}, "inflight_bad_region"),
        ({"mmap_offset": 1 << 63}, "region_map_failed"),
        ({"mmap_offset": 3}, "region_map_failed"),  # not page aligned: no wrong mapping
    ],
)
def test_hostile_descriptions_are_problems_not_mappings(kw: dict, code: str) -> None:
    buf = Buffer(2, 8)
    try:
        r = buf.region(**kw)
        assert not r.mapped and [p.code for p in r.problems] == [code]
        assert r.queue(0).problems[0].code == "inflight_bad_region"
    finally:
        buf.close()


def test_hostile_contents_and_sizes_never_read_outside() -> None:
    buf = Buffer(2, 8)
    try:
        buf.header(0, desc_num=0xFFFF)  # more states than its region holds
        r = buf.region()
        q = r.queue(0)
        assert q.count == 0 and q.problems[0].code == "inflight_bad_region"
        assert "desc_num 65535" in q.problems[0].text
        assert r.queue(2).problems[0].code == "inflight_bad_region"  # no such queue
        assert r.queue(-1).problems
        # a region larger than the file: reading past its end would SIGBUS, so no mapping
        big = buf.region(mmap_size=buf.size * 4, num_queues=8)
        assert not big.mapped and big.problems[0].code == "region_map_failed"
        # the peer shrinks its memfd under our mapping
        os.ftruncate(buf.fd, 100)
        (p,) = r.queue(1).problems
        assert p.code == "guest_read_crosses_region" and "file's end" in p.text
        r.close()
    finally:
        buf.close()


def test_sampler_maps_set_inflight_fd_and_shows_it_with_the_ring() -> None:
    img = GuestImage(size=1 << 16, name="vuinspect-inflight-guest")
    ring = SplitRing(img, 8)
    buf = Buffer(1, 8, name="vuinspect-inflight-buf")
    out: list[Frame] = []
    clock = [1_000_000_000_000]
    s = Sampler(out.append, 0.1, clock=lambda: clock[0])
    before = fd_count()
    try:
        payload = {"mmap_size": buf.size, "mmap_offset": 0, "num_queues": 1, "queue_size": 8}
        s.memory(1, clock[0], build("main", 32, payload), [buf.fd])
        setup(s, img, ring, clock[0])
        s._drain()
        assert maps_mentioning("vuinspect-inflight-buf")  # our own read-only mapping
        img.pack(GPA + 0x800, "IIQ", 1, 0, 42)
        ring.set_desc(0, GPA + 0x800, 16)
        ring.add_avail(0)
        buf.mark(0, 0, counter=1)  # the back-end took request 0
        clock[0] += 100_000_000
        s._tick(clock[0])
        msgs = [m for m in Pipeline(device="blk").run(out) if m.kind == "ring"]
        p = msgs[-1].payload
        assert p["in_flight"] == 1 and p["inflight"]["count"] == 1
        assert p["inflight"]["descs"] == [{"index": 0, "counter": 1, "next": 0}]
        assert "inflight_fd=1" in ring_summary(p)
        assert any("marked 1: desc#counter 0#1" in line for line in detail_lines(p))
        # the Queues view's Enter (the latest ring frame's details) shows it too
        assert "inflight region: v1 desc_num=8" in chains_text(1, 0, msgs[-1].frame, p).plain
        s.event(event_frame("close", clock[0], 1, {"reason": "test"}))
        s._drain()
        assert not maps_mentioning("vuinspect-inflight-buf")  # unmapped with its connection
        assert fd_count() <= before  # (none left open; other tests' threads may close theirs)
    finally:
        s.stop()
        img.close()
        buf.close()


def test_detail_lines_show_inflight_and_chain_problems_escaped() -> None:
    p = {
        "inflight": {
            "version": 1,
            "desc_num": 8,
            "used_idx": 0,
            "count": 0,
            "problems": [{"code": "inflight_bad_region", "text": "queue 0: bad\x1b[2J"}],
        },
        "chains": [{"head": 1, "descs": [], "problems": [{"code": "desc_loop", "text": "x"}]}],
    }
    lines = detail_lines(p)
    assert lines[0].startswith("        inflight region: v1 desc_num=8 used_idx=0 marked 0")
    assert "          !! inflight_bad_region: queue 0: bad" in lines[1]
    assert "\x1b" not in "".join(lines)
    assert lines[-1] == "          !! desc_loop: x"
