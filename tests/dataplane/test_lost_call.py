"""lost_call when no call fd reached the back-end (a rule dropped SET_VRING_CALL, or the
front-end never sent one): the back-end uses the request, the driver asked for an
interrupt, and none can come.  Rings built in a memfd, the proxy's sampler, the session's
diagnosis from the frames: one path, as live."""

from __future__ import annotations

import pytest

from vuinspect.dataplane import RingSample, diagnose
from vuinspect.dataplane.sampler import Sampler
from vuinspect.dataplane.text import ring_summary
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline

from .guestimage import GPA, GuestImage, SplitRing
from .test_sampler import setup

S = 1_000_000_000
T0 = 1_000_000_000_000


def run(call: dict | None, *, no_interrupt: bool = False, event_idx: bool = False) -> list:
    """Start a blk ring (SET_VRING_CALL ``call`` sent first, or none), make one request
    available, use it, tick 3 s; the messages the reader's pipeline makes of the frames."""
    img = GuestImage(size=1 << 16, name="vuinspect-lostcall")
    ring = SplitRing(img, 8, event_idx=event_idx)
    out: list[Frame] = []
    clock = [T0]
    s = Sampler(out.append, 0.1, clock=lambda: clock[0])
    try:
        if call is not None:  # (the relay's fd tap, or the recorder for a NOFD one)
            data = build("main", 13, call)
            if call.get("nofd"):
                s.control(clock[0], 1, "f2b", data)
            else:
                s.memory(1, clock[0], data, [img.fd])
        setup(s, img, ring, clock[0])
        if event_idx:  # setup() acks VERSION_1 only: keep EVENT_IDX
            s.control(clock[0], 1, "f2b", build("main", 2, {"features": 1 << 32 | 1 << 29}))
        s._drain()
        ring.set_flags(avail=1 if no_interrupt else 0)
        img.pack(GPA + 0x800, "IIQ", 0, 0, 7)  # a blk IN header
        ring.set_desc(0, GPA + 0x800, 16)
        ring.add_avail(0)
        clock[0] += 100_000_000
        s._tick(clock[0])  # the driver's request ...
        ring.push_used(0)  # ... and the back-end's answer (its call goes nowhere)
        for _ in range(30):
            clock[0] += 100_000_000
            s._tick(clock[0])
        open_ = event_frame("open", T0 - 1, 1, {"label": "t", "device": "blk"})
        return [m for m in Pipeline(device="blk").run([open_, *out]) if m.kind == "ring"]
    finally:
        s.stop()
        img.close()


def codes(msgs: list) -> list[str]:
    return [c for m in msgs for c in m.problem_codes]


def test_no_call_fd_is_a_lost_call_naming_vring_indices_and_time() -> None:
    msgs = run(None)
    assert msgs[0].payload["call_fd"] == "none"  # the frames say so (read offline too)
    assert "call_fd=none" in ring_summary(msgs[0].payload)  # (read --rings)
    assert codes(msgs) == ["lost_call"]
    (m,) = [m for m in msgs if "lost_call" in m.problem_codes]
    (p,) = m.problems
    assert "vring 0" in p.text and "used idx 1" in p.text and "avail idx 1" in p.text
    assert "no call fd" in p.text and "SET_VRING_CALL" in p.text
    # raised 2 s after the used move (the sample at T0 + 0.2 s), not before
    assert m.ts_ns >= T0 + int(2.2 * S)


def test_a_call_fd_or_nofd_or_a_driver_that_polls_is_no_lost_call() -> None:
    assert "lost_call" not in codes(run({"index": 0}))  # the back-end got an eventfd
    msgs = run({"index": 0, "nofd": 1})  # NOFD: the front-end said it polls
    assert msgs[0].payload["call_fd"] == "nofd" and "lost_call" not in codes(msgs)
    assert "lost_call" not in codes(run(None, no_interrupt=True))  # SeaBIOS: no interrupts


def test_event_idx_lost_call() -> None:
    # used_event 0: the driver wants a call when used moves past 0
    msgs = run(None, event_idx=True)
    assert msgs[-1].payload["used_event"] == 0 and codes(msgs) == ["lost_call"]


def smp(t: float, avail: int, used: int, **kw) -> RingSample:
    return RingSample(0, int(t * S), "split", 256, True, avail, used, **kw)


def test_diagnose_rule_and_its_resolutions() -> None:
    none = [smp(0, 4, 4, call_fd="none"), smp(1, 5, 5, call_fd="none")]
    (f,) = diagnose(none, now_ns=int(3.1 * S))
    assert (f.code, f.since_ns, f.raised_ns, f.active) == ("lost_call", S, 3 * S, True)
    assert diagnose(none, now_ns=int(2.9 * S)) == []  # 1.9 s: not yet
    # the driver caught up (used_event moved): resolved
    ev = [
        smp(0, 4, 4, call_fd="none", used_event=4),
        smp(1, 5, 5, call_fd="none", used_event=4),
        smp(4, 5, 5, call_fd="none", used_event=5),
    ]
    (f,) = diagnose(ev, now_ns=5 * S)
    assert f.resolution == "driver" and f.until_ns == 4 * S
    # a call fd reached the back-end later (libvhost-user calls once when it gets one)
    late = [*none, smp(4, 5, 5, call_fd="fd")]
    (f,) = diagnose(late, now_ns=5 * S)
    assert f.resolution == "call" and f.duration_ns == 3 * S
    # unknown call fd (an older capture, or after a RESET_*) and no tracing: nothing judged
    assert diagnose([smp(0, 4, 4), smp(1, 5, 5)], now_ns=9 * S) == []
    assert diagnose([smp(0, 4, 4, call_fd="fd"), smp(1, 5, 5, call_fd="fd")], now_ns=9 * S) == []


@pytest.mark.parametrize("bad", ["maybe", 1, None, True])
def test_call_fd_read_back_strictly(bad: object) -> None:
    d = smp(0, 1, 1, call_fd="none").to_json()
    assert RingSample.from_json(d).call_fd == "none"
    d["call_fd"] = bad
    with pytest.raises(ValueError):
        RingSample.from_json(d)


def test_traced_calls_lost_after_the_ring_went_idle() -> None:
    """--trace-notify: kicks seen, the request used (nothing left in flight), no call.  The
    reader used to start each vring afresh at an idle sample, forgetting the used move."""
    from vuinspect.frames import notify_frame, ring_frame

    def ring(t: float, avail: int, used: int) -> Frame:
        smp_ = RingSample(0, T0 + int(t * S), "split", 256, avail_idx=avail, used_idx=used)
        return ring_frame(smp_.ts_ns, 1, {**smp_.to_json(), "event": "tick"})

    kick = T0 + int(0.15 * S)
    frames = [
        event_frame("open", T0 - 1, 1, {"label": "t", "device": "blk"}),
        ring(0.0, 0, 0),
        notify_frame(kick, 1, 0, "kick", 1, kick, kick),
        ring(0.2, 1, 1),  # used: the driver waits for its call
        *(ring(0.2 + 0.5 * k, 1, 1) for k in range(1, 6)),  # the sampler's keepalives
    ]
    msgs = [m for m in Pipeline(device="blk").run(frames) if m.kind == "ring"]
    lost = [(m, p) for m in msgs for p in m.problems if p.code == "lost_call"]
    assert len(lost) == 1, [m.problem_codes for m in msgs]
    m, p = lost[0]
    assert m.ts_ns == T0 + int(2.2 * S) and "no call" in p.text and "no call fd" not in p.text
    # a call in time: nothing
    call = T0 + int(0.3 * S)
    ok = [*frames[:4], notify_frame(call, 1, 0, "call", 1, call, call), *frames[4:]]
    assert not [c for m in Pipeline(device="blk").run(ok) for c in m.problem_codes]
