"""Samples across a ring's end and the rate hint: no ring index 'moves back' that did not.

A front-end may take a ring's memory back once GET_VRING_BASE is answered (DPDK's
virtio-user frees and zeroes it on close): the sampler, a thread behind the forwarding,
can read the ring after that, and such a read is not a look at the ring.  And a ring
fast enough to lap the u16 counters between two samples is judged with one rate hint
rule live and offline (rings.rate_hint)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from vuinspect.dataplane.rings import RingSample, diff
from vuinspect.dataplane.sampler import Sampler
from vuinspect.dataplane.track import RingTrack
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline

from .guestimage import GuestImage, SplitRing
from .test_sampler import setup

GET_VRING_BASE = 11
NS = 1_000_000_000


@contextlib.contextmanager
def _sampler(name: str, num: int, t: int) -> Iterator[tuple[Sampler, SplitRing, list[Frame]]]:
    """A sampler over a memfd guest with vring 0 (``num``) set up and started at ``t``."""
    img = GuestImage(size=1 << 16, name=name)
    ring = SplitRing(img, num)
    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: t)
    try:
        setup(s, img, ring, t)
        yield s, ring, out
    finally:
        s.stop()
        img.close()


def _codes(frames: list[Frame]) -> list[str]:
    """Problem codes of the ring frames, as the sampler wrote them and as read offline."""
    msgs = Pipeline(device="blk").run([event_frame("open", 0, 1, {"label": "t"}), *frames])
    return [c for m in msgs if m.kind == "ring" for c in m.problem_codes]


@pytest.mark.parametrize(
    ("avail", "used", "base", "zeroed", "kept"),
    [
        (8, 0, 0, True, False),  # CI: the idle receive ring, avail 8 -> 0 'moved back'
        (40, 40, 40, True, False),  # a transmit ring: 40 -> 0 is no advance of 65 496
        (8, 0, 0, False, True),  # QEMU: guest memory stays the ring: the stop sample holds
        (40, 38, 40, False, True),
    ],
)
def test_a_stop_sample_read_after_its_reply_is_kept_only_if_it_is_still_the_ring(
    avail: int, used: int, base: int, zeroed: bool, kept: bool
) -> None:
    """GET_VRING_BASE answered, then the front-end may take the ring back (DPDK frees and
    zeroes it), then the sampler's thread gets to the stop sample: kept only if the
    reply's base agrees with it and it does not move back."""
    t = 1_000 * NS
    with _sampler("vuinspect-ring-release", 8, t) as (s, ring, out):
        ring.set_avail_idx(avail)
        ring.set_used_idx(used)
        s._drain()
        s._tick(t + NS // 10)
        assert b'"avail_idx":%d' % avail in [f for f in out if f.kind == "ring"][-1].data
        s.control(t + NS // 5, 1, "f2b", build("main", GET_VRING_BASE, {"index": 0, "num": 0}))
        reply = build("main", GET_VRING_BASE, {"index": 0, "num": base}, reply=True)
        s.control(t + NS // 5, 1, "b2f", reply)  # answered: the ring is the front-end's again
        if zeroed:
            ring.set_avail_idx(0)  # DPDK: rte_free zeroes it
            ring.set_used_idx(0)
        s._drain()
        rings = [f.data for f in out if f.kind == "ring"]
        stops = [d for d in rings if b'"event":"stop"' in d]
        assert len(stops) == kept, rings
        if kept:
            assert b'"avail_idx":%d' % avail in stops[0], stops
        assert "ring_backwards" not in _codes(out)
        n = len(out)
        s._tick(t + NS)  # the stop still ends the ring: no tick reads it after
        assert len(out) == n


def test_a_stop_sample_read_before_the_reply_is_kept() -> None:
    """The usual order (the sampler reads before the reply passes): the stop sample is there."""
    with _sampler("vuinspect-ring-release2", 8, NS) as (s, ring, out):
        ring.set_avail_idx(8)
        s._drain()
        s.control(2 * NS, 1, "f2b", build("main", GET_VRING_BASE, {"index": 0, "num": 0}))
        s._drain()
        reply = build("main", GET_VRING_BASE, {"index": 0, "num": 0}, reply=True)
        s.control(2 * NS, 1, "b2f", reply)
        s._drain()
        stop = [f for f in out if f.kind == "ring"][-1].data
        assert b'"event":"stop"' in stop and b'"avail_idx":8' in stop
        # and the next ring start is sampled again
        s.memory(1, 3 * NS, build("main", 12, {"u64": 0}), [ring.img.fd])
        s._drain()
        assert b'"event":"start"' in out[-1].data


# A ring lapping the u16 counters (200 000 slots/s, num 256) sampled at irregular
# intervals: 0.1 s learns the rate, 0.5 s laps it (aliased), then 0.32718 s moves 65 436
# slots, which the u16 arithmetic alone reads as 100 back.
RATE = 200_000
STEPS_NS = (0, NS // 10, NS // 2, 327_180_000, NS // 10)


def _lapping_samples() -> list[RingSample]:
    out, t, moved = [], 0, 0
    for step in STEPS_NS:
        t += step
        moved += RATE * step // NS
        out.append(
            RingSample(1, t, "split", 256, avail_idx=moved & 0xFFFF, used_idx=moved & 0xFFFF)
        )
    return out


def test_a_lapping_ring_is_not_seen_moving_back_offline() -> None:
    samples = _lapping_samples()
    assert diff(samples[2], samples[3]).problems  # (without the rate it would be flagged)
    track = RingTrack(1)
    for sample in samples:
        if track.last is not None:
            d = diff(track.last, sample, rate_hint=track.rate)
            assert not d.problems, (sample, track.rate)
        track.add_sample(sample, receive=False, trace=False)


def test_a_lapping_ring_is_not_seen_moving_back_live() -> None:
    with _sampler("vuinspect-ring-lapping", 256, 0) as (s, ring, out):
        s._drain()
        for sample in _lapping_samples()[1:]:
            ring.set_avail_idx(sample.avail_idx)
            ring.set_used_idx(sample.used_idx)
            s._tick(sample.ts_ns)
        assert len([f for f in out if f.kind == "ring"]) == len(STEPS_NS)
        assert "ring_backwards" not in _codes(out)


def test_a_rate_is_not_timed_over_a_control_samples_short_interval() -> None:
    """A control sample is stamped with its message's time and read when the sampler's
    thread gets to it (later, under load): 1 000 slots 'in 1 ms' is no 1 M slots/s ring.
    Timed over that, every 0.1 s interval after would be aliased for good, and a real move
    back never said."""
    moves = [(0, 0), (1_000_000, 1_000), (101_000_000, 3_000), (201_000_000, 2_990)]
    samples = [RingSample(1, t, "split", 256, avail_idx=u, used_idx=u) for t, u in moves]
    track = RingTrack(1)
    found = []
    for sample in samples:
        if track.last is not None:
            found += [p.code for p in diff(track.last, sample, rate_hint=track.rate).problems]
        track.add_sample(sample, receive=False, trace=False)
    assert found == ["ring_backwards"] * 2, track.rate  # (avail and used both)
