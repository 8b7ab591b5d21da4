"""Random guest memory through every reader: results only, never an exception, bounded time.

The memory is generated from a hypothesis-drawn seed with a bias towards
structure (descriptors pointing into the region, small flags, near indices) so
the walks go deep, plus plain random bytes.  ``VUINSPECT_FUZZ_SCALE`` scales
the example count (CI: the default).
"""

from __future__ import annotations

import os
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vuinspect.dataplane import (
    GuestMemory,
    PackedTracker,
    RingConfig,
    SplitTracker,
    diagnose,
    diff,
    in_flight_chains,
    sample,
)
from vuinspect.dataplane.inflight import walk_packed, walk_split

from .guestimage import GPA, GuestImage, fd_count

SIZE = 0x10000
RING = GPA + 0x1000
SCALE = float(os.environ.get("VUINSPECT_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=max(1, int(150 * SCALE)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _addr(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.6:
        return GPA + rng.randrange(SIZE)  # in the region (maybe too long)
    if pick < 0.8:
        return GPA + SIZE - rng.randrange(64)  # at the end
    return rng.getrandbits(64)


def fill(img: GuestImage, rng: random.Random, num: int, structured: bool) -> None:
    img.write(GPA, rng.randbytes(SIZE))
    if not structured:
        return
    for i in range(min(num, 512)):
        flags = rng.choice((0, 1, 2, 3, 4, 5, 6, 0x80, 0x81, 0x8080, 0x8000, rng.getrandbits(16)))
        img.pack(
            RING + 16 * i,
            "QIHH",
            _addr(rng),
            rng.choice((0, 1, 16, 32, 48, 4096, rng.getrandbits(32))),
            flags,
            rng.randrange(min(2 * num + 1, 65536)),
        )


@FUZZ
@given(
    seed=st.integers(0, 2**32 - 1),
    num=st.sampled_from((1, 2, 4, 8, 64, 256, 3, 0, 32768)),
    packed=st.booleans(),
    event_idx=st.booleans(),
    structured=st.booleans(),
    device=st.sampled_from((None, "blk", "net", "fs")),
    skew=st.integers(-64, 64),
    iommu=st.booleans(),
)
def test_random_guest_memory_never_raises(
    seed, num, packed, event_idx, structured, device, skew, iommu
):
    rng = random.Random(seed)
    before = fd_count()
    img = GuestImage(size=SIZE, mmap_offset=rng.choice((0, 0x10, 0x1234)), name="vuinspect-fuzz")
    mem = GuestMemory(gpa_addresses=True, iommu=iommu)
    try:
        mem.set_table([img.spec], [img.fd])
        if iommu:
            mem.iotlb_update(GPA, SIZE // 2, img.uva)
            mem.iotlb_update(
                GPA + SIZE // 2 + rng.randrange(0x1000), rng.randrange(1, SIZE), img.uva + SIZE // 2
            )
        cfg = RingConfig(
            0,
            num,
            RING + skew,
            RING + 16 * num + skew,
            RING + 16 * num + 0x1000 + skew,
            packed,
            event_idx,
        )
        tracker = PackedTracker.from_base(num, rng.getrandbits(32)) if packed and num else None
        split = SplitTracker()
        samples = []
        start = time.monotonic()
        for step in range(3):
            fill(img, rng, num, structured)
            if step == 2 and rng.random() < 0.3:
                mem.remove_region(img.spec)  # the region goes away mid-session
            s = sample(mem, cfg, step, tracker)
            samples.append(s)
            if len(samples) > 1:
                diff(samples[-2], s)
            split.update(mem, cfg, s)
            chains = in_flight_chains(mem, cfg, s, device, max_descs=2000)
            assert sum(len(c.descs) for c in chains) <= 2000 + 2 * len(chains)
            for c in chains:
                c.to_json()
            walk = walk_packed if packed else walk_split
            for head in (0, rng.randrange(65536), num - 1) if num else ():
                walk(mem, cfg, head, device)
            s.to_json()
        diagnose(samples, now_ns=10 * 1_000_000_000, resets=[1], trace_kicks=True, trace_calls=True)
        assert time.monotonic() - start < 5
    finally:
        mem.close()
        img.close()
    assert fd_count() <= before  # (none left open; other tests' threads may close theirs)
