"""Diagnosis rules over sample series: stall, lost kick, lost call, reset in flight."""

from __future__ import annotations

import pytest

from vuinspect.dataplane import Notify, RingSample, diagnose
from vuinspect.dataplane.diagnose import needs_call, needs_kick

S = 1_000_000_000


def smp(t: float, avail: int, used: int, **kw) -> RingSample:
    kw.setdefault("num", 256)
    return RingSample(
        0, int(t * S), "split", kw.pop("num"), True, avail & 0xFFFF, used & 0xFFFF, **kw
    )


def sig(kind: str, t: float, count: int = 1) -> Notify:
    return Notify(kind, count, int(t * S), int(t * S))


def only(findings, code):
    return [f for f in findings if f.code == code]


def test_stall_fires_after_2s_and_resolves_with_duration():
    series = [smp(0, 10, 10), smp(1, 14, 10)]
    assert diagnose(series, now_ns=int(2.9 * S)) == []  # 1.9 s still: not yet
    active = diagnose(series, now_ns=3 * S)
    assert len(active) == 1
    f = active[0]
    assert (f.code, f.vring, f.since_ns, f.raised_ns, f.in_flight) == (
        "backend_stalled",
        0,
        1 * S,
        3 * S,
        4,
    )
    assert f.active and f.duration_ns is None and "4 in flight" in f.text
    resolved = diagnose(series + [smp(5.5, 14, 14)], now_ns=6 * S)
    assert len(resolved) == 1
    r = resolved[0]
    assert not r.active and r.until_ns == int(5.5 * S) and r.resolution == "progress"
    assert r.duration_ns == int(4.5 * S)
    assert r.to_json()["duration_ns"] == int(4.5 * S)


def test_no_stall_when_nothing_in_flight_or_progress_continues():
    idle = [smp(0, 5, 5), smp(10, 5, 5)]
    assert diagnose(idle, now_ns=60 * S) == []
    busy = [smp(t / 2, 100 + t * 8, 100 + t * 8 - 3) for t in range(20)]
    assert diagnose(busy, now_ns=int(9.6 * S)) == []
    assert diagnose(busy, now_ns=int(9.6 * S), stall_s=0.2)  # the threshold is honoured


def test_stall_over_the_u16_wrap():
    series = [smp(0, 0xFFFE, 0xFFFA), smp(0.1, 3, 0xFFFC)]
    f = diagnose(series, now_ns=3 * S)
    assert [x.in_flight for x in f] == [7] and f[0].used_idx == 0xFFFC


def test_lost_kick():
    series = [smp(0, 10, 10), smp(1, 12, 10)]  # NO_NOTIFY clear: the driver had to kick
    f = diagnose(series, now_ns=4 * S, trace_kicks=True)
    kicks = only(f, "lost_kick")
    assert len(kicks) == 1 and kicks[0].since_ns == 1 * S and kicks[0].avail_idx == 12
    # a kick seen between the samples: no lost kick
    assert not only(
        diagnose(series, [sig("kick", 0.5)], now_ns=4 * S, trace_kicks=True), "lost_kick"
    )
    # a late kick resolves it
    late = only(diagnose(series, [sig("kick", 3.5)], now_ns=4 * S, trace_kicks=True), "lost_kick")
    assert late[0].until_ns == int(3.5 * S) and late[0].resolution == "kick"
    # the device asked for no kicks (used.flags NO_NOTIFY): nothing lost
    sup = [smp(0, 10, 10, used_flags=1), smp(1, 12, 10, used_flags=1)]
    assert not only(diagnose(sup, now_ns=4 * S, trace_kicks=True), "lost_kick")
    # without kick tracing a missing kick proves nothing
    assert not only(diagnose(series, now_ns=4 * S), "lost_kick")


def test_lost_kick_with_event_idx():
    # avail_event 11: the advance 10 -> 12 crosses it, so a kick was due
    due = [
        smp(0, 10, 10, avail_event=10, used_event=9),
        smp(1, 12, 10, avail_event=10, used_event=9),
    ]
    assert only(diagnose(due, now_ns=4 * S, trace_kicks=True), "lost_kick")
    not_due = [
        smp(0, 10, 10, avail_event=20, used_event=9),
        smp(1, 12, 10, avail_event=20, used_event=9),
    ]
    assert not only(diagnose(not_due, now_ns=4 * S, trace_kicks=True), "lost_kick")
    # at the wrap: avail_event 0xFFFF, 0xFFFE -> 1 crosses it
    wrap = [
        smp(0, 0xFFFE, 0xFFFE, avail_event=0xFFFF, used_event=0),
        smp(1, 1, 0xFFFE, avail_event=0xFFFF, used_event=0),
    ]
    assert needs_kick(wrap[0], wrap[1])
    assert only(diagnose(wrap, now_ns=4 * S, trace_kicks=True), "lost_kick")


def test_lost_call_and_its_resolutions():
    series = [smp(0, 12, 10), smp(1, 12, 12)]  # NO_INTERRUPT clear
    f = only(diagnose(series, now_ns=int(3.5 * S), trace_calls=True), "lost_call")
    assert len(f) == 1 and f[0].active and f[0].used_idx == 12 and f[0].since_ns == 1 * S
    assert not only(
        diagnose(series, [sig("call", 1.2)], now_ns=4 * S, trace_calls=True), "lost_call"
    )
    late = only(
        diagnose(series, [sig("call", 3.2, 5)], now_ns=4 * S, trace_calls=True), "lost_call"
    )
    assert late[0].resolution == "call" and late[0].duration_ns == int(2.2 * S)
    quiet = [smp(0, 12, 10, avail_flags=1), smp(1, 12, 12, avail_flags=1)]
    assert not only(diagnose(quiet, now_ns=4 * S, trace_calls=True), "lost_call")


def test_lost_call_with_used_event_and_driver_catching_up():
    before, after = (
        smp(0, 20, 10, used_event=10, avail_event=0),
        smp(1, 20, 12, used_event=10, avail_event=0),
    )
    assert needs_call(before, after)
    assert not needs_call(smp(0, 20, 10, used_event=15), smp(1, 20, 12, used_event=15))
    f = only(diagnose([before, after], now_ns=4 * S, trace_calls=True), "lost_call")
    assert f and f[0].active
    caught_up = smp(5, 20, 12, used_event=12, avail_event=0)
    f = only(diagnose([before, after, caught_up], now_ns=6 * S, trace_calls=True), "lost_call")
    assert f[0].resolution == "driver" and f[0].until_ns == 5 * S


def test_ring_reset_with_requests_in_flight():
    series = [smp(0, 10, 7), smp(1, 10, 8)]
    f = diagnose(series, resets=[int(1.5 * S)], now_ns=30 * S)
    assert [x.code for x in f] == ["ring_reset_in_flight"]  # and no stall while stopped
    assert f[0].in_flight == 2 and f[0].since_ns == int(1.5 * S) and f[0].active
    restarted = series + [smp(3, 10, 8), smp(3.1, 10, 10)]
    f = diagnose(restarted, resets=[int(1.5 * S)], now_ns=4 * S)
    assert f[0].resolution == "progress" and f[0].until_ns == int(3.1 * S)
    assert diagnose([smp(0, 5, 5)], resets=[1 * S]) == []  # nothing in flight: fine


def test_reset_ends_a_stall():
    series = [smp(0, 10, 7)]
    f = diagnose(series, resets=[5 * S], now_ns=10 * S)
    stall = only(f, "backend_stalled")[0]
    assert stall.until_ns == 5 * S and stall.resolution == "reset"
    assert only(f, "ring_reset_in_flight")


def test_packed_suppression_rules():
    def pk(avail_pos, avail_wrap, used_pos, used_wrap, **kw):
        return RingSample(
            1,
            0,
            "packed",
            8,
            True,
            0,
            0,
            avail_pos=avail_pos,
            avail_wrap=avail_wrap,
            used_pos=used_pos,
            used_wrap=used_wrap,
            **kw,
        )

    a = pk(
        6,
        1,
        6,
        1,
        device_event_flags=2,
        device_event_off=1,
        device_event_wrap=0,
        driver_event_flags=1,
    )
    b = pk(2, 0, 6, 1)  # 6 -> wraps -> 2: passes offset 1 of the next lap
    assert needs_kick(a, b)
    a2 = pk(6, 1, 6, 1, device_event_flags=2, device_event_off=3, device_event_wrap=0)
    assert not needs_kick(a2, b)
    assert not needs_kick(pk(0, 1, 0, 1, device_event_flags=1), b)
    assert needs_call(pk(0, 1, 0, 1, driver_event_flags=0), b)
    assert not needs_call(pk(0, 1, 0, 1, driver_event_flags=1), b)


def test_failed_samples_are_skipped_and_order_does_not_matter():
    bad = RingSample(0, 2 * S, "split", 256, ok=False)
    series = [smp(1, 14, 10), bad, smp(0, 10, 10)]
    f = diagnose(series, now_ns=3 * S)
    assert [x.code for x in f] == ["backend_stalled"] and f[0].since_ns == 1 * S


def test_receive_queues_wait_for_data_without_being_stalled():
    from vuinspect.dataplane.diagnose import is_receive_queue

    assert is_receive_queue("net", 0) and not is_receive_queue("net", 1)
    assert is_receive_queue("vsock", 2) and not is_receive_queue("blk", 0)
    assert not is_receive_queue(None, 0)
    posted = [smp(0, 256, 0), smp(1, 256, 0)]  # a quiet network: RX buffers just wait
    assert diagnose(posted, now_ns=60 * S, resets=[61 * S], receive=True) == []
    assert [f.code for f in diagnose(posted, now_ns=60 * S, resets=[61 * S])] == [
        "backend_stalled",
        "ring_reset_in_flight",
    ]


def test_long_series_are_linear():
    import time

    n = 50_000
    series = [smp(k / 100, k // 3 * 3, k // 3 * 3 - (k % 3)) for k in range(n)]
    notifies = [sig("kick", k / 100 + 0.001) for k in range(n)] + [
        sig("call", k / 100 + 0.002) for k in range(n)
    ]
    t0 = time.monotonic()
    f = diagnose(
        series,
        notifies,
        trace_kicks=True,
        trace_calls=True,
        resets=[k * S for k in range(0, n // 100, 7)],
    )
    assert time.monotonic() - t0 < 10
    assert not [x for x in f if x.code in ("backend_stalled", "lost_kick", "lost_call")]


def test_notify_json():
    n = Notify("call", 3, 10, 20)
    assert Notify.from_json(n.to_json()) == n
    for bad in (
        {"kind": "err"},
        {"kind": "kick", "count": -1, "first_ns": 0, "last_ns": 0},
        {"kind": "kick", "count": True, "first_ns": 0, "last_ns": 0},
        None,
    ):
        with pytest.raises(ValueError):
            Notify.from_json(bad)
