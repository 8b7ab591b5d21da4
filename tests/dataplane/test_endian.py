"""Legacy (virtio 0.9, no VERSION_1) rings of a big-endian guest: the ring is in the guest's
byte order (SET_VRING_ENDIAN 1 for a cross-endian guest), so indices, descriptors and the
request header must be read big-endian; VERSION_1 rings are little-endian whatever is said."""

from __future__ import annotations

import struct

import pytest

from vuinspect.dataplane import GuestMemory, in_flight_chains, sample
from vuinspect.dataplane.rings import RingConfig, ring_big_endian
from vuinspect.dataplane.sampler import Sampler
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline

from .guestimage import GPA, GuestImage, SplitRing
from .test_sampler import setup

VERSION_1 = 1 << 32


class BigEndianGuest(GuestImage):
    """Guest RAM written by a big-endian guest (ppc64, s390x)."""

    def pack(self, gpa: int, fmt: str, *values: int) -> None:
        self.write(gpa, struct.pack(">" + fmt, *values))


@pytest.mark.parametrize(
    ("features", "endian", "host", "big"),
    [
        (VERSION_1, 1, "little", False),  # VERSION_1: little-endian, SET_VRING_ENDIAN or not
        (VERSION_1, None, "big", False),
        (0, 1, "little", True),  # legacy, cross-endian big-endian guest
        (0, 0, "big", False),  # legacy, cross-endian little-endian guest on a BE host
        (0, None, "big", True),  # legacy, no SET_VRING_ENDIAN: the host's order
        (0, None, "little", False),
    ],
)
def test_ring_byte_order_rule(features: int, endian: int | None, host: str, big: bool) -> None:
    assert ring_big_endian(features, endian, host) is big


def _be_ring(img: GuestImage) -> SplitRing:
    """A blk OUT request (sector 0x1234) in flight, one used before it, on a 16-slot ring."""
    ring = SplitRing(img, 16, event_idx=True)
    img.pack(GPA + 0x800, "IIQ", 1, 0, 0x1234)  # virtio_blk_outhdr: OUT, sector
    ring.set_desc(5, GPA + 0x800, 16, 1, 6)  # NEXT -> 6
    ring.set_desc(6, GPA + 0x900, 512, 0, 0)
    ring.set_desc(2, GPA + 0xA00, 16)
    ring.add_avail(2, 5)
    ring.push_used(2, 1)
    ring.set_flags(avail=1, used=0)
    ring.set_events(used_event=0x0102, avail_event=0x0304)
    return ring


def test_big_endian_legacy_ring_reads_right() -> None:
    img = BigEndianGuest(size=1 << 16, name="vuinspect-be-guest")
    mem = GuestMemory()
    try:
        mem.set_table([img.spec], [img.fd])
        ring = _be_ring(img)
        le = ring.config()
        be = RingConfig(le.index, le.num, le.desc, le.avail, le.used, event_idx=True,
                        big_endian=True)  # fmt: skip
        s = sample(mem, be, 1000)
        assert s.ok and not s.problems
        assert (s.avail_idx, s.used_idx, s.in_flight) == (2, 1, 1)
        assert (s.avail_flags, s.used_event, s.avail_event) == (1, 0x0102, 0x0304)
        (chain,) = in_flight_chains(mem, be, s, "blk")
        assert chain.head == 5 and not chain.problems
        assert [(d.index, d.len) for d in chain.descs] == [(5, 16), (6, 512)]
        assert chain.header is not None
        assert (chain.header["type_name"], chain.header["sector"]) == ("OUT", 0x1234)
        # read as little-endian, the same bytes say something else (the test can fail)
        wrong = sample(mem, le, 1000)
        assert (wrong.avail_idx, wrong.used_idx) == (0x0200, 0x0100)
    finally:
        mem.close()
        img.close()


def _sampled(features: int, endian: int | None) -> list:
    img = BigEndianGuest(size=1 << 16, name="vuinspect-be-sampler")
    ring = SplitRing(img, 16)
    out: list[Frame] = []
    clock = [1_000_000_000_000]
    s = Sampler(out.append, 0.1, clock=lambda: clock[0])
    try:
        setup(s, img, ring, clock[0])  # (acks VERSION_1: SET_FEATURES again below)
        s.control(clock[0], 1, "f2b", build("main", 2, {"features": features}))
        if endian is not None:
            s.control(clock[0], 1, "f2b", build("main", 23, {"index": 0, "num": endian}))
        s._drain()
        ring.add_avail(0, 1, 2)
        ring.push_used(0)
        clock[0] += 100_000_000
        s._tick(clock[0])
        open_ = event_frame("open", 0, 1, {"label": "t", "device": "blk"})
        return [m.payload for m in Pipeline(device="blk").run([open_, *out]) if m.kind == "ring"]
    finally:
        s.stop()
        img.close()


def test_sampler_follows_set_vring_endian_for_legacy_rings_only() -> None:
    legacy = _sampled(0, 1)[-1]
    assert (legacy["avail_idx"], legacy["used_idx"], legacy["in_flight"]) == (3, 1, 2)
    assert not legacy.get("problems")
    # a VERSION_1 device's ring is little-endian: SET_VRING_ENDIAN does not apply
    modern = _sampled(VERSION_1, 1)[-1]
    assert (modern["avail_idx"], modern["used_idx"]) == (0x0300, 0x0100)
