"""Split and packed ring readers over a memfd guest: indices, wrap, event idx, diffs."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vuinspect.dataplane import PackedTracker, RingConfig, RingSample, diff, sample
from vuinspect.dataplane.rings import sample_split, vring_need_event

from .guestimage import GPA, UVA, PackedRing, SplitRing


@pytest.mark.parametrize(
    "event,new,old,expected",
    [
        (0, 1, 0, True),  # crossing 0
        (5, 5, 5, False),  # no move
        (4, 5, 3, True),
        (5, 5, 3, False),  # the event index itself is not yet crossed until passed
        (0xFFFF, 0, 0xFFFE, True),  # crosses the wrap
        (0xFFFE, 1, 0xFFFF, False),  # event behind old
        (0, 2, 0xFFFF, True),  # 0xFFFF -> 2 passes 0 (u16 wrap)
        (3, 2, 0xFFFF, False),
        (0xFFFF, 0xFFFF, 0, False),
    ],
)
def test_vring_need_event_at_the_wrap(event, new, old, expected):
    assert vring_need_event(event, new, old) is expected


def test_split_sample_reads_flags_indices_and_event_idx(guest):
    img, mem = guest
    ring = SplitRing(img, 8, event_idx=True)
    ring.add_avail(3, 1)
    ring.push_used(3, 512)
    ring.set_flags(avail=1, used=1)
    ring.set_events(used_event=7, avail_event=2)
    s = sample(mem, ring.config(), 1000)
    assert s.ok and s.problems == ()
    assert (s.avail_idx, s.used_idx, s.in_flight) == (2, 1, 1)
    assert (s.avail_flags, s.used_flags, s.used_event, s.avail_event) == (1, 1, 7, 2)
    assert s.wants_kick is None and s.wants_call is None  # decided per index with EVENT_IDX
    j = s.to_json()
    assert j["in_flight"] == 1 and j["layout"] == "split" and "avail_pos" not in j


def test_split_without_event_idx_reads_no_event_fields(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.set_flags(avail=1, used=0)
    s = sample(mem, ring.config())
    assert s.used_event is None and s.avail_event is None
    assert s.wants_kick is True and s.wants_call is False


def test_u16_wrap_of_the_indices(guest):
    img, mem = guest
    ring = SplitRing(img, 8)
    ring.set_avail_idx(0xFFFE)
    ring.set_used_idx(0xFFFD)
    before = sample(mem, ring.config(), 0)
    ring.add_avail(0, 1, 2, 3)  # 0xFFFE -> 2
    ring.push_used(5)
    ring.push_used(6)  # 0xFFFD -> 0xFFFF
    after = sample(mem, ring.config(), 100)
    assert after.avail_idx == 2 and after.used_idx == 0xFFFF
    assert before.in_flight == 1 and after.in_flight == 3
    d = diff(before, after)
    assert (d.avail_advanced, d.used_advanced, d.dt_ns) == (4, 2, 100)
    assert d.changed == {"avail_idx": (0xFFFE, 2), "used_idx": (0xFFFD, 0xFFFF)}
    assert d.problems == ()
    assert not diff(after, sample(mem, ring.config(), 200))


def test_ring_moving_backwards_and_index_too_far_ahead(guest):
    img, mem = guest
    ring = SplitRing(img, 8)
    ring.set_avail_idx(10)
    ring.set_used_idx(9)
    a = sample(mem, ring.config())
    ring.set_used_idx(7)
    b = sample(mem, ring.config())
    d = diff(a, b)
    assert [p.code for p in d.problems] == ["ring_backwards"]
    assert "used_idx" in d.problems[0].text and d.used_advanced == 0
    ring.set_avail_idx(7 + 9)  # 9 in flight, num 8
    c = sample(mem, ring.config())
    assert [p.code for p in c.problems] == ["ring_index_ahead"]


def test_bad_ring_addresses_and_sizes_are_results(guest):
    img, mem = guest
    ring = SplitRing(img, 8)
    cfg = ring.config()
    for broken in (
        RingConfig(0, 8, cfg.desc, 0x1234, cfg.used),  # avail nowhere
        RingConfig(0, 8, cfg.desc, cfg.avail, UVA + img.size - 2),  # used crosses end
        RingConfig(0, 6, cfg.desc, cfg.avail, cfg.used),  # not a power of 2
        RingConfig(0, 0, cfg.desc, cfg.avail, cfg.used),
        RingConfig(0, 1 << 16, cfg.desc, cfg.avail, cfg.used),
    ):
        s = sample_split(mem, broken)
        assert not s.ok and len(s.problems) == 1
    assert (
        sample_split(mem, RingConfig(0, 8, 0, 0x1234, 0)).problems[0].code == "guest_addr_unmapped"
    )
    assert (
        sample_split(mem, RingConfig(0, 8, 0, cfg.avail, UVA + img.size - 2)).problems[0].code
        == "guest_read_crosses_region"
    )


def test_gpa_ring_addresses(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.add_avail(0)
    assert not sample(mem, ring.config("gpa")).ok  # GPA read as UVA: not in any region
    mem.gpa_addresses = True
    s = sample(mem, ring.config("gpa"))
    assert s.ok and s.avail_idx == 1
    assert not sample(mem, ring.config("uva")).ok


def test_region_removed_mid_session(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.add_avail(0)
    assert sample(mem, ring.config()).ok
    mem.remove_region(img.spec)
    s = sample(mem, ring.config())
    assert not s.ok and s.problems[0].code == "guest_addr_unmapped"


def test_iotlb_ring_addresses(guest):
    img, mem = guest
    ring = SplitRing(img, 4)
    ring.add_avail(2, 3)
    mem.iommu = True
    iova = 0xFEE0_0000
    cfg = RingConfig(
        0,
        4,
        iova + 0x1000,
        iova + 0x1000 + (ring.avail - ring.desc),
        iova + 0x1000 + (ring.used - ring.desc),
    )
    s = sample(mem, cfg)
    assert not s.ok and s.problems[0].code == "iotlb_miss"
    mem.iotlb_update(iova, 0x10000, UVA)
    s = sample(mem, cfg)
    assert s.ok and s.avail_idx == 2


def test_packed_ring_positions_and_wrap_counters(guest):
    img, mem = guest
    ring = PackedRing(img, 4)
    ring.set_events(driver=(0, 1, 0), device=(0, 1, 1))
    cfg = ring.config()
    tracker = PackedTracker(4)
    s0 = sample(mem, cfg, 0, tracker)
    assert s0.ok and (s0.avail_pos, s0.avail_wrap, s0.used_pos, s0.used_wrap) == (0, 1, 0, 1)
    assert (s0.driver_event_flags, s0.device_event_flags) == (0, 1)
    assert s0.wants_call is True and s0.wants_kick is False
    ring.make_available(7, [(GPA, 16, 0), (GPA + 16, 512, 2)])  # 2 slots
    ring.make_available(8, [(GPA + 0x100, 64, 0)])
    s1 = sample(mem, cfg, 1, tracker)
    assert (s1.avail_pos, s1.avail_wrap, s1.avail_idx, s1.in_flight) == (3, 1, 3, 3)
    ring.mark_used(7, 2)  # the device skips the whole chain
    s2 = sample(mem, cfg, 2, tracker)
    assert (s2.used_pos, s2.used_wrap, s2.in_flight) == (2, 1, 1)
    ring.make_available(9, [(GPA, 16, 0), (GPA, 16, 0)])  # slots 3 and 0: wraps
    s3 = sample(mem, cfg, 3, tracker)
    assert (s3.avail_pos, s3.avail_wrap, s3.in_flight) == (1, 0, 3)
    ring.mark_used(8, 1)
    ring.mark_used(9, 2)
    s4 = sample(mem, cfg, 4, tracker)
    assert (s4.used_pos, s4.used_wrap, s4.in_flight, s4.used_idx) == (1, 0, 0, 5)
    d = diff(s3, s4)
    assert d.changed["used_wrap"] == (1, 0) and d.used_advanced == 3
    # a second lap: the wrap counters flip back
    for k in range(4):
        ring.make_available(k, [(GPA, 16, 0)])
    s5 = sample(mem, cfg, 5, tracker)
    assert (s5.avail_pos, s5.avail_wrap, s5.in_flight) == (1, 1, 4)
    for k in range(4):
        ring.mark_used(k, 1)
    s6 = sample(mem, cfg, 6, tracker)
    assert (s6.used_pos, s6.used_wrap, s6.in_flight, s6.avail_idx, s6.used_idx) == (1, 1, 0, 9, 9)


def test_packed_tracker_from_vring_base(guest):
    img, mem = guest
    ring = PackedRing(img, 4)
    # the device stopped at avail 2 / used 1, both in the first lap
    tracker = PackedTracker.from_base(4, 2 | 1 << 15 | 1 << 16 | 1 << 31)
    assert (tracker.avail_pos, tracker.avail_wrap, tracker.used_pos, tracker.used_wrap) == (
        2,
        1,
        1,
        1,
    )
    assert tracker.slots_in_flight() == 1
    ring.avail_pos = 2
    ring.make_available(1, [(GPA, 8, 0)])
    s = sample(mem, ring.config(), 0, tracker)
    assert (s.avail_pos, s.in_flight) == (3, 2)


def test_packed_walk_is_bounded_by_num(guest):
    img, mem = guest
    ring = PackedRing(img, 8)
    for k in range(8):  # every descriptor 'available' with NEXT: one endless chain
        ring.write_desc(k, GPA, 16, k, 1 | 1 << 7)
    tracker = PackedTracker(8)
    s = sample(mem, ring.config(), 0, tracker)
    assert s.ok and s.in_flight == 8 and (s.avail_pos, s.avail_wrap) == (0, 0)
    s = sample(mem, ring.config(), 1, tracker)  # nothing more can become available
    assert s.in_flight == 8


def test_packed_base_without_used_half_is_dpdk_style():
    t = PackedTracker.from_base(256, 0x8000)  # DPDK virtio-user on a fresh start
    assert (t.avail_pos, t.avail_wrap, t.used_pos, t.used_wrap) == (0, 1, 0, 1)
    assert t.slots_in_flight() == 0
    t = PackedTracker.from_base(256, 0x8000_8000 | 7 | 3 << 16)  # QEMU: both halves
    assert (t.avail_pos, t.used_pos, t.slots_in_flight()) == (7, 3, 4)


def test_packed_used_skips_the_chain_whatever_descriptor_carries_the_id(guest):
    img, mem = guest
    ring = PackedRing(img, 8)
    cfg = ring.config()
    tracker = PackedTracker(8)
    # buffer id only on the head (the rest 0), then only on the last descriptor (spec)
    ring.make_available(5, [(GPA, 16, 0), (GPA, 16, 0), (GPA, 16, 0)])
    ring.write_desc(1, GPA, 16, 0, 0x81)
    ring.write_desc(2, GPA, 16, 0, 0x80)
    ring.make_available(6, [(GPA, 16, 0), (GPA, 16, 0)])
    ring.write_desc(3, GPA, 16, 0, 0x81)
    assert sample(mem, cfg, 0, tracker).in_flight == 5
    ring.mark_used(5, 3)
    ring.mark_used(6, 2)
    s = sample(mem, cfg, 1, tracker)
    assert (s.used_pos, s.in_flight) == (5, 0)


def test_packed_used_marks_overwritten_by_the_driver_still_count(guest):
    """The driver reclaims used slots and reuses them before the next sample."""
    img, mem = guest
    ring = PackedRing(img, 4)
    cfg = ring.config()
    tracker = PackedTracker(4)
    for k in range(4):
        ring.make_available(k, [(GPA, 16, 0)])
    assert sample(mem, cfg, 0, tracker).in_flight == 4
    for k in range(4):
        ring.mark_used(k, 1)
    ring.make_available(7, [(GPA, 16, 0)])  # slots 0 and 1 again: their used marks are gone
    ring.make_available(8, [(GPA, 16, 0)])
    s = sample(mem, cfg, 1, tracker)
    assert (s.avail_idx, s.used_idx, s.in_flight) == (6, 4, 2)
    assert (s.avail_pos, s.avail_wrap, s.used_pos, s.used_wrap) == (2, 0, 0, 0)


def test_backwards_is_not_claimed_when_the_ring_may_have_lapped(guest):
    img, mem = guest
    ring = SplitRing(img, 256)
    ring.set_avail_idx(1000)
    ring.set_used_idx(990)
    a = sample(mem, ring.config(), 0)
    ring.set_avail_idx(900)  # 100 behind: or 65 436 ahead
    ring.set_used_idx(890)
    b = sample(mem, ring.config(), 100_000_000)
    assert [p.code for p in diff(a, b).problems] == ["ring_backwards", "ring_backwards"]
    fast = diff(a, b, rate_hint=1_000_000.0)  # 1 M slots/s: 100 000 in 100 ms
    assert fast.aliased and not fast.problems and fast.used_advanced == 0
    slow = diff(a, sample(mem, ring.config(), 200_000_000), rate_hint=1000.0)
    assert not slow.aliased and slow.problems
    ring.set_used_idx(900)
    d = diff(b, sample(mem, ring.config(), 300_000_000))
    assert d.used_advanced == 10 and d.rate == pytest.approx(10 / 0.2)


def test_samples_round_trip_through_json_and_reject_garbage(guest):
    img, mem = guest
    ring = SplitRing(img, 8, event_idx=True)
    ring.add_avail(1, 2)
    samples = [
        sample(mem, ring.config(), 5),
        sample(mem, RingConfig(0, 8, 0, 0x1234, 0), 6),
        sample(mem, PackedRing(img, 4).config(), 7, PackedTracker(4)),
    ]
    for s in samples:
        assert RingSample.from_json(json.loads(json.dumps(s.to_json()))) == s
    for bad in (
        [],
        {"vring": 0},
        {**samples[0].to_json(), "num": -1},
        {**samples[0].to_json(), "layout": "ring"},
        {**samples[0].to_json(), "problems": [{"code": "nope", "text": ""}]},
        {**samples[0].to_json(), "ok": 1},
        {**samples[0].to_json(), "avail_idx": True},
    ):
        with pytest.raises(ValueError):
            RingSample.from_json(bad)

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    )
    keys = st.sampled_from(
        [
            "vring",
            "ts_ns",
            "layout",
            "num",
            "ok",
            "problems",
            "avail_idx",
            "used_event",
            "avail_pos",
        ]
    )

    @settings(max_examples=300, deadline=None)
    @given(
        st.booleans(),
        st.dictionaries(keys, values | st.sampled_from(["split", "packed", 3]), max_size=9),
    )
    def fuzz(start_valid, d):
        d = {**samples[0].to_json(), **d} if start_valid else d
        with contextlib.suppress(ValueError):
            s = RingSample.from_json(d)
            s.to_json()
            diff(s, samples[0])

    fuzz()


def test_ring_config_from_session_state():
    from vuinspect.state import Vring

    ring = Vring(1, num=256, desc=0x1000, used=0x3000, avail=0x2000)
    cfg = RingConfig.from_vring(ring, 1 << 34 | 1 << 29 | 1 << 35)
    assert cfg == RingConfig(1, 256, 0x1000, 0x2000, 0x3000, True, True, True)
    assert RingConfig.from_vring(ring).packed is False
    assert RingConfig.from_vring(Vring(0, num=256)) is None


def test_packed_in_order_batch_with_one_used_descriptor(guest):
    img, mem = guest
    ring = PackedRing(img, 8)
    cfg = ring.config()
    tracker = PackedTracker(8)
    ring.make_available(10, [(GPA, 16, 0)])
    ring.make_available(11, [(GPA, 16, 0), (GPA, 16, 0)])
    ring.make_available(12, [(GPA, 16, 0)])
    assert sample(mem, cfg, 0, tracker).in_flight == 4
    ring.mark_used(12, 4)  # IN_ORDER: one used descriptor, the batch's last id, at its start
    s = sample(mem, cfg, 1, tracker)
    assert (s.used_pos, s.used_idx, s.in_flight) == (4, 4, 0)
