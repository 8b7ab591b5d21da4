"""Diagnosis rules: pure functions over one vring's samples and notifications.

Samples arrive only when something changed (plus start/stop), so a rule is
evaluated at every sample *and* at ``now_ns``: a stall shows while no new
sample comes.  Each rule yields ``Finding`` records naming the vring, the
indices and the times; a finding is active until what it waits for happens
(used progress, a kick, a call), then it is resolved with its duration.

Rules (VIRTQUEUE.md §2-4):
* ``backend_stalled``: requests in flight and the used index still for
  ``stall_s`` (default 2 s).
* ``lost_kick``: the avail index advanced, the device did not suppress
  notifications (split: ``NO_NOTIFY`` clear, or ``avail_event`` crossed with
  EVENT_IDX; packed: device event area ENABLE, or DESC crossed), no kick was
  seen and the used index did not move for ``kick_s``.  Needs kick tracing.
* ``lost_call``: the used index advanced, the driver did not suppress
  interrupts (split: ``NO_INTERRUPT`` clear, or ``used_event`` crossed;
  packed: driver event area), and no call came for ``call_s``.  Needs call
  tracing, or a sample saying the back-end has no call fd at all
  (``call_fd == "none"``: no SET_VRING_CALL reached it, e.g. a proxy rule
  dropped it), when no call can come.  Resolved by a call (or a call fd
  reaching the back-end), or by the driver showing it caught up
  (``used_event`` moved).
* ``ring_reset_in_flight``: a GET_VRING_BASE / reset / reconnect time at
  which the last sample had requests in flight; resolved when the restarted
  ring's used index moves.

The suppression state used for an advance is the one of the sample *before*
it: the state the other side saw when it decided.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .problems import DataProblem, dp_problem
from .rings import RingSample, u16, vring_need_event

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Notify:
    """``count`` kicks or calls on one vring between ``first_ns`` and ``last_ns``.

    One signal is ``Notify(kind, 1, t, t)``; an aggregate window keeps the
    count and its first and last time.
    """

    kind: Literal["kick", "call"]
    count: int
    first_ns: int
    last_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }

    @classmethod
    def from_json(cls, d: Any) -> Notify:
        """Inverse of ``to_json`` (a ``notify`` frame read back); ValueError if malformed."""
        if not isinstance(d, dict) or d.get("kind") not in ("kick", "call"):
            raise ValueError("a notify record is an object with kind kick or call")
        values = [d.get(k) for k in ("count", "first_ns", "last_ns")]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        if len(ints) != len(values):
            raise ValueError("count, first_ns and last_ns are unsigned integers")
        return cls(d["kind"], *ints)


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis: active while ``until_ns`` is None."""

    code: str
    vring: int
    since_ns: int  # when the condition began
    raised_ns: int  # when the rule fired (since + threshold)
    avail_idx: int
    used_idx: int
    in_flight: int
    text: str
    until_ns: int | None = None
    resolution: str = ""  # progress | kick | call | driver | reset

    @property
    def active(self) -> bool:
        return self.until_ns is None

    @property
    def duration_ns(self) -> int | None:
        return None if self.until_ns is None else self.until_ns - self.since_ns

    @property
    def problem(self) -> DataProblem:
        return dp_problem(self.code, self.text)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["active"] = self.active
        out["duration_ns"] = self.duration_ns
        return out


class _Signals:
    """Any signal in (a, b]? over sorted, non-overlapping aggregates (bisect, no scan)."""

    def __init__(self, notifies: Sequence[Notify], kind: str) -> None:
        items = sorted(
            (n for n in notifies if n.kind == kind and n.count > 0), key=lambda n: n.last_ns
        )
        self.firsts = [n.first_ns for n in items]
        self.lasts = [n.last_ns for n in items]

    def first_in(self, a: int, b: int) -> int | None:
        """Time of the first signal after ``a`` and at or before ``b`` (None if none)."""
        i = bisect.bisect_right(self.lasts, a)
        if i < len(self.lasts) and self.firsts[i] <= b:
            return max(self.firsts[i], a + 1)
        return None


def _packed_lin(pos: int | None, wrap: int | None, num: int) -> int:
    return (pos or 0) + (0 if wrap else num)


def _packed_crossed(
    off: int | None,
    wrap: int | None,
    old_pos: int | None,
    old_wrap: int | None,
    new_pos: int | None,
    new_wrap: int | None,
    num: int,
) -> bool:
    """Did the positions move over the event descriptor (off, wrap)? (mod 2·num)."""
    mod = 2 * num
    e, o, n = (
        _packed_lin(off, wrap, num),
        _packed_lin(old_pos, old_wrap, num),
        _packed_lin(new_pos, new_wrap, num),
    )
    return (e - o) % mod < (n - o) % mod


# side -> (split event field, index, split flag rule, packed event area, packed position)
_SIDES = {
    "kick": ("avail_event", "avail_idx", "wants_kick", "device_event", "avail"),
    "call": ("used_event", "used_idx", "wants_call", "driver_event", "used"),
}


def _needs(side: str, before: RingSample, after: RingSample) -> bool:
    event, idx, wants, area, pos = _SIDES[side]
    if before.layout == "split":
        ev = getattr(before, event)
        if ev is not None:
            return vring_need_event(ev, getattr(after, idx), getattr(before, idx))
        return bool(getattr(before, wants))
    flags = getattr(before, area + "_flags")
    if flags == 2:
        return _packed_crossed(
            getattr(before, area + "_off"),
            getattr(before, area + "_wrap"),
            getattr(before, pos + "_pos"),
            getattr(before, pos + "_wrap"),
            getattr(after, pos + "_pos"),
            getattr(after, pos + "_wrap"),
            after.num,
        )
    return flags == 0


def needs_kick(before: RingSample, after: RingSample) -> bool:
    """Had the driver to kick for the avail advance from ``before`` to ``after``?"""
    return _needs("kick", before, after)


def needs_call(before: RingSample, after: RingSample) -> bool:
    """Had the device to call for the used advance from ``before`` to ``after``?"""
    return _needs("call", before, after)


@dataclass(slots=True)
class _Open:
    """A condition being watched: it becomes a Finding once ``since + limit`` passes."""

    since: int
    window: int  # signals after this time count
    sample: RingSample
    finding: Finding | None = None
    at: int = -1  # the finding's place in the output list


# Queues whose available buffers wait for data from the device (a quiet network,
# no vsock traffic): buffers in flight there are not requests, so neither the stall
# nor the reset rule applies.  "even": every even index (net, console receiveqs).
RECEIVE_QUEUES: dict[str, str | tuple[int, ...]] = {
    "net": "even",  # receiveq0, transmitq0, receiveq1, ... (the control queue stays in QEMU)
    "console": "even",
    "vsock": (0, 2),  # rx, tx, event
    "scsi": (1,),  # control, event, request...
    "input": (0,),  # eventq, statusq
    "sound": (1, 3),  # control, event, tx, rx
    "gpio": (1,),  # requestq, eventq
}


def is_receive_queue(device: str | None, index: int) -> bool:
    """Does vring ``index`` of ``device`` only hold buffers for the device to fill?"""
    rule = RECEIVE_QUEUES.get(device or "")
    if rule == "even":
        return index % 2 == 0
    return rule is not None and index in rule


def diagnose(
    samples: Sequence[RingSample],
    notifies: Sequence[Notify] = (),
    *,
    now_ns: int | None = None,
    resets: Sequence[int] = (),
    trace_kicks: bool = False,
    trace_calls: bool = False,
    receive: bool = False,
    stall_s: float = 2.0,
    kick_s: float = 2.0,
    call_s: float = 2.0,
) -> list[Finding]:
    """Findings for one vring, in the order they were raised (active ones last state).

    ``samples``: that vring's samples (any order; failed reads are skipped);
    ``notifies``: its kicks/calls (used only with ``trace_kicks``/``trace_calls``:
    without tracing a missing signal proves nothing); ``resets``: times of
    GET_VRING_BASE, RESET_*, or reconnects; ``now_ns``: the time to judge
    waits up to (default: the last sample); ``receive``: a receive queue
    (``is_receive_queue``), where waiting buffers are normal.
    """
    ok = sorted((s for s in samples if s.ok), key=lambda s: s.ts_ns)
    reset_times = sorted(resets)
    if now_ns is None:
        now_ns = max([s.ts_ns for s in ok] + reset_times[-1:] + [0])
    kicks, calls = _Signals(notifies, "kick"), _Signals(notifies, "call")
    limits = {
        "backend_stalled": int(stall_s * NS),
        "lost_kick": int(kick_s * NS),
        "lost_call": int(call_s * NS),
    }
    out: list[Finding] = []
    watch: dict[str, _Open] = {}  # code -> open condition
    reset_open: _Open | None = None
    prev: RingSample | None = None

    def fire(code: str, t: int) -> None:
        w = watch.get(code)
        if w is None or w.finding is not None or t - w.since < limits[code]:
            return
        if receive and code == "backend_stalled":
            return
        s = w.sample
        what = {
            "backend_stalled": f"{s.in_flight} in flight, used idx {s.used_idx} still",
            "lost_kick": f"avail idx {s.avail_idx} advanced, no kick, used idx {s.used_idx} still",
            "lost_call": (
                f"used idx {s.used_idx} advanced past what the driver waits for "
                f"(avail idx {s.avail_idx}), but the back-end has no call fd "
                "(no SET_VRING_CALL reached it): no interrupt"
                if s.call_fd == "none"
                else f"used idx {s.used_idx} advanced past what the driver waits for, no call"
            ),
        }[code]
        w.finding = Finding(
            code,
            s.vring,
            w.since,
            w.since + limits[code],
            s.avail_idx,
            s.used_idx,
            s.in_flight,
            f"vring {s.vring}: {what} for {(t - w.since) / NS:.1f} s",
        )
        w.at = len(out)
        out.append(w.finding)

    def close(code: str, t: int, how: str) -> None:
        w = watch.pop(code, None)
        if w is not None and w.finding is not None:
            out[w.at] = replace(w.finding, until_ns=t, resolution=how)

    def signal_close(t: int) -> None:
        """Resolve kick/call waits by a signal seen up to ``t``, or fire them."""
        for code, sig in (("lost_kick", kicks), ("lost_call", calls)):
            w = watch.get(code)
            if w is None:
                continue
            seen = sig.first_in(w.window, t)
            if seen is not None:
                if w.finding is None and seen - w.since >= limits[code]:
                    fire(code, seen)
                close(code, seen, "kick" if code == "lost_kick" else "call")
            else:
                fire(code, t)

    def on_sample(s: RingSample) -> None:
        nonlocal prev, reset_open
        fire("backend_stalled", s.ts_ns)
        signal_close(s.ts_ns)
        if reset_open is not None and (
            s.used_idx != reset_open.sample.used_idx or s.in_flight == 0
        ):
            if reset_open.finding is not None:
                out[reset_open.at] = replace(
                    reset_open.finding, until_ns=s.ts_ns, resolution="progress"
                )
            reset_open = None
        if prev is None:
            if s.in_flight:
                watch["backend_stalled"] = _Open(s.ts_ns, s.ts_ns, s)
            prev = s
            return
        used_moved = s.used_idx != prev.used_idx
        avail_moved = u16(s.avail_idx - prev.avail_idx) != 0
        if used_moved or not s.in_flight:
            close("backend_stalled", s.ts_ns, "progress")
            close("lost_kick", s.ts_ns, "progress")
        stall = watch.get("backend_stalled")
        if s.in_flight and stall is None:
            watch["backend_stalled"] = _Open(s.ts_ns, s.ts_ns, s)
        elif stall is not None and stall.finding is None:
            stall.sample = s  # name the latest indices when it fires
        if (
            trace_kicks
            and avail_moved
            and not used_moved
            and "lost_kick" not in watch
            and needs_kick(prev, s)
            and kicks.first_in(prev.ts_ns, s.ts_ns) is None
        ):
            watch["lost_kick"] = _Open(s.ts_ns, prev.ts_ns, s)
        if "lost_call" in watch and s.used_event is not None and s.used_event != prev.used_event:
            close("lost_call", s.ts_ns, "driver")
        if (
            "lost_call" in watch
            and watch["lost_call"].sample.call_fd == "none"
            and s.call_fd == "fd"
        ):
            close("lost_call", s.ts_ns, "call")  # (libvhost-user calls once when it gets one)
        if (
            (trace_calls or s.call_fd == "none")
            and used_moved
            and "lost_call" not in watch
            and needs_call(prev, s)
            and calls.first_in(prev.ts_ns, s.ts_ns) is None
        ):
            watch["lost_call"] = _Open(s.ts_ns, prev.ts_ns, s)
        prev = s

    def on_reset(t: int) -> None:
        nonlocal prev, reset_open
        fire("backend_stalled", t)
        signal_close(t)
        for code in list(watch):
            close(code, t, "reset")
        if prev is not None and prev.in_flight and not receive:
            s = prev
            f = Finding(
                "ring_reset_in_flight",
                s.vring,
                t,
                t,
                s.avail_idx,
                s.used_idx,
                s.in_flight,
                f"vring {s.vring}: stopped or reset with {s.in_flight} "
                f"in flight (avail idx {s.avail_idx}, used idx {s.used_idx})",
            )
            reset_open = _Open(t, t, s, f, len(out))
            out.append(f)
        prev = None  # the next sample starts the restarted ring afresh

    i = j = 0
    while i < len(ok) or j < len(reset_times):
        if j < len(reset_times) and (i == len(ok) or reset_times[j] <= ok[i].ts_ns):
            on_reset(reset_times[j])
            j += 1
        else:
            on_sample(ok[i])
            i += 1
    if prev is not None:  # the ring is running: judge the waits up to now
        fire("backend_stalled", now_ns)
        signal_close(now_ns)
    return out
