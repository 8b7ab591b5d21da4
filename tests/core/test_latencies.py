"""state.Latencies: exact percentiles for small sets, bounded memory and 1 % error past them."""

from __future__ import annotations

import random
import sys

from vuinspect.state import Latencies


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
