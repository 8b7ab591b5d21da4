"""state.py: Latencies (exact percentiles for small sets, bounded memory and 1 % error past
them), count_request, who owes a Pending reply, the records' JSON."""

from __future__ import annotations

import random
import sys

from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.state import Latencies, Pending, Region, RequestStats, Vring, count_request
from vuinspect.testing import wire


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(max(1, -(-len(ordered) * q // 100))) - 1]


def test_small_sets_are_exact_and_merge_exactly():
    a, b = Latencies(), Latencies()
    for v in (40.0, 10.0, 30.0):
        a.add(v)
    b.add(20.0)
    a.merge(b)
    assert (a.n, a.max, a.percentile(50), a.percentile(99)) == (4, 40.0, 20.0, 40.0)
    assert Latencies().percentile(50) is None


def test_a_long_session_holds_buckets_not_values():
    rng = random.Random(7)
    values = [rng.lognormvariate(4, 1.5) for _ in range(200_000)] + [0.0, -3.0]
    lat = Latencies()
    for v in values:
        lat.add(v)
    assert lat.n == len(values) and lat.max == max(values)
    for q in (1, 50, 90, 99, 99.9):
        want = nearest_rank(values, q)
        got = lat.percentile(q)
        assert got is not None and abs(got - want) <= 0.01 * abs(want) + 1.0, (q, got, want)
    held = sum(sys.getsizeof(s) for s in lat._buckets.values())
    assert len(lat._buckets) < 3000 and held < 400_000  # 200k floats as a list: 1.6 MB+


def test_merging_histograms_and_exact_sets():
    big, small = Latencies(), Latencies()
    for i in range(Latencies.EXACT + 10):
        big.add(float(100 + i % 50))
    small.add(5000.0)
    small.merge(big)  # exact into histogram
    big.merge(small)
    assert big.n == 2 * (Latencies.EXACT + 10) + 1 and big.max == 5000.0
    p50 = big.percentile(50)
    assert p50 is not None and 120 <= p50 <= 130


def test_values_at_or_below_one_microsecond_share_a_bucket():
    lat = Latencies()
    for _ in range(Latencies.EXACT + 1):
        lat.add(2.0)
    lat.add(0.5)
    lat.add(-1.0)  # a clock step backwards: no log of a negative
    assert lat.n == Latencies.EXACT + 3 and lat.max == 2.0
    assert lat.percentile(0.01) == -1.0  # the bucket keeps its smallest value
    assert lat.percentile(100) == 2.0


def _msgs(*frames: Frame) -> list:
    pipeline = Pipeline()
    return [m for f in frames for m in pipeline.feed(f)]


def test_count_request_counts_requests_replies_and_their_latency():
    q = Frame(1_000, 1, "main", "f2b", wire.pack(wire.GET_FEATURES))
    r = Frame(31_000, 1, "main", "b2f", wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, bytes(8)))
    request, reply = _msgs(q, r)
    stats: dict[str, RequestStats] = {}
    assert count_request(stats, request) == len(request.problems)
    count_request(stats, reply)
    st = stats["main:GET_FEATURES"]
    assert (st.count, st.replies, st.latencies_us.n) == (1, 1, 1)
    assert st.latencies_us.percentile(50) == reply.latency_us == 30.0


def test_pending_names_who_waits_and_who_owes():
    (main,) = _msgs(Frame(1, 1, "main", "f2b", wire.pack(wire.GET_FEATURES)))
    assert (Pending(main, 0, True).waiter, Pending(main, 0, True).owner) == (
        "front-end",
        "back-end",
    )

    class BackendRequest:
        channel = "backend"

    p = Pending(BackendRequest(), 0, False)
    assert (p.waiter, p.owner) == ("back-end", "front-end")


def test_records_as_json():
    v = Vring(3, num=256, kick="fd 7")
    j = v.to_json()
    assert j["index"] == 3 and j["num"] == 256 and j["kick"] == "fd 7" and j["enabled"] is None
    assert set(j) == set(Vring.__slots__)
    r = Region(0x1000, 0x2000, 0x7F00, 0, "memfd:guest")
    assert r.to_json() == {
        "guest_phys_addr": 0x1000,
        "memory_size": 0x2000,
        "userspace_addr": 0x7F00,
        "mmap_offset": 0,
        "fd": "memfd:guest",
    }
