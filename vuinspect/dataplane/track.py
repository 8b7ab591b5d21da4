"""Per-vring data-plane state of a session, built from ``ring`` and ``notify`` frames.

The session keeps one :class:`RingTrack` per vring that has samples or
notifications.  Live (the proxy's frames) and offline (a capture) feed the
same records, so the diagnosis (``diagnose``) runs on one path: each sample
re-judges the vring over a bounded window, and the findings that appear or
end are returned for the caller to attach to the message at hand.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .diagnose import NS, Finding, Notify, diagnose
from .rings import RingSample, diff, rate_hint

#: Samples kept per vring for the diagnosis (time and count bounded: each sample re-judges
#: the window, so reading costs at most MAX_SAMPLES steps a sample, whatever the file).
WINDOW_NS = 120 * NS
MAX_SAMPLES = 128
MAX_NOTIFIES = 1024
MAX_FINDINGS = 64  # ended findings kept for the state view
#: How long after a used move the samples around it stay (diagnose's call_s, 2 s, + slack).
CALL_HOLD_NS = 3 * NS


@dataclass(slots=True)
class RingTrack:
    """What the samples and notifications of one vring say (queryable state)."""

    index: int
    last: RingSample | None = None
    samples: deque[RingSample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    notifies: deque[Notify] = field(default_factory=lambda: deque(maxlen=MAX_NOTIFIES))
    resets: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    sample_count: int = 0
    progress: int = 0  # used slots advanced over all samples seen
    rate: float = 0.0  # used slots per second: rings.rate_hint over the samples so far
    last_progress_ns: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"kick": 0, "call": 0, "err": 0})
    last_signal_ns: dict[str, int] = field(default_factory=dict)
    active: dict[str, Finding] = field(default_factory=dict)  # code -> active finding
    #: A stop (GET_VRING_BASE, RESET_*) seen on the wire whose "stop" sample has not come
    #: yet: the sampler reads the ring just after it forwarded the message, so the sample
    #: that closes the ring start follows the message in the capture.
    pending_reset: int | None = None
    ended: deque[Finding] = field(default_factory=lambda: deque(maxlen=MAX_FINDINGS))
    #: The sample before the last used move that needed a call we can judge, and the
    #: move's time: kept in the window until a lost_call could have fired.
    call_from: tuple[RingSample | None, int] | None = None

    def add_sample(
        self, s: RingSample, *, receive: bool, trace: bool
    ) -> tuple[list[Finding], list[Finding]]:
        """Take one sample; return the findings it (newly) raises and the ones it ends."""
        self.sample_count += 1
        if self.last is not None and self.last.ok and s.ok:
            d = diff(self.last, s, rate_hint=self.rate)
            if d.used_advanced:
                self.progress += d.used_advanced
                self.last_progress_ns = s.ts_ns
            self.rate = rate_hint(self.rate, d)
        moved = self.last is not None and s.ok and s.used_idx != self.last.used_idx
        if moved and (trace or s.call_fd == "none"):
            self.call_from = (self.last, s.ts_ns)  # a lost_call may be judged from these two
        if s.ok:
            self.last = s
        self.samples.append(s)
        while self.samples and self.samples[0].ts_ns < s.ts_ns - WINDOW_NS:
            self.samples.popleft()
        raised, ended = self.judge(s.ts_ns, receive=receive, trace=trace)
        if (
            s.ok
            and not self.active
            and self.pending_reset is None
            and (s.in_flight == 0 or moved and not trace)
        ):
            # nothing open and nothing the earlier samples could still raise: start afresh
            # (but keep the used move a missing call is judged on until it could have fired)
            hold = self.call_from
            if hold is not None and s.ts_ns - hold[1] <= CALL_HOLD_NS and hold[0] is not None:
                while self.samples and self.samples[0].ts_ns < hold[0].ts_ns:
                    self.samples.popleft()
            else:
                self.call_from = None
                self.samples.clear()
                self.samples.append(s)
            self.resets.clear()
        return raised, ended

    def add_notify(
        self, signal: Literal["kick", "call", "err"], count: int, first_ns: int, last_ns: int
    ) -> None:
        if signal not in self.counts:
            return
        self.counts[signal] += count
        self.last_signal_ns[signal] = last_ns
        if signal in ("kick", "call"):
            self.notifies.append(Notify(signal, count, first_ns, last_ns))

    def reset(
        self, ts_ns: int, *, receive: bool, trace: bool
    ) -> tuple[list[Finding], list[Finding]]:
        """GET_VRING_BASE, RESET_*, close: the ring stops (in-flight requests are noted)."""
        self.resets.append(ts_ns)
        raised, ended = self.judge(ts_ns, receive=receive, trace=trace)
        self.last = None  # the next start restarts the indices
        return raised, ended

    def restart(self, ts_ns: int) -> list[Finding]:
        """SET_VRING_BASE: a new ring start; what was open about the old one ends here."""
        ended = [self._end(f, ts_ns, "reset") for f in list(self.active.values())]
        self.active.clear()
        self.samples.clear()
        self.notifies.clear()
        self.resets.clear()
        self.last = None
        self.call_from = None
        return ended

    def judge(
        self, now_ns: int, *, receive: bool, trace: bool
    ) -> tuple[list[Finding], list[Finding]]:
        findings = diagnose(
            self.samples,
            self.notifies,
            now_ns=now_ns,
            resets=[t for t in self.resets if t >= now_ns - WINDOW_NS],
            trace_kicks=trace,
            trace_calls=trace,
            receive=receive,
        )
        raised: list[Finding] = []
        ended: list[Finding] = []
        now_active: dict[str, Finding] = {}
        closed: dict[str, Finding] = {}
        for f in findings:
            if f.active:
                now_active[f.code] = f
            else:
                closed[f.code] = f
        for code, f in list(self.active.items()):
            if code not in now_active:
                done = closed.get(code)
                ended.append(
                    self._end(
                        f,
                        done.until_ns if done and done.until_ns else now_ns,
                        done.resolution if done else "progress",
                    )
                )
                del self.active[code]
        for code, f in now_active.items():
            if code not in self.active:
                raised.append(f)
            self.active[code] = f
        return raised, ended

    def _end(self, f: Finding, until_ns: int, how: str) -> Finding:
        done = replace(f, until_ns=max(until_ns, f.since_ns), resolution=how)
        self.ended.append(done)
        return done

    def to_json(self) -> dict[str, Any]:
        last = self.last or next((s for s in reversed(self.samples) if s.ok), None)
        return {
            "vring": self.index,
            "samples": self.sample_count,
            "last": last.to_json() if last is not None else None,
            "in_flight": last.in_flight if last is not None else None,
            "progress": self.progress,
            "rate": round(self.rate, 3),
            "last_progress_ns": self.last_progress_ns,
            "kicks": self.counts["kick"],
            "calls": self.counts["call"],
            "errs": self.counts["err"],
            "last_kick_ns": self.last_signal_ns.get("kick"),
            "last_call_ns": self.last_signal_ns.get("call"),
            "active": [f.to_json() for f in self.active.values()],
            "ended": [f.to_json() for f in self.ended],
        }


#: Vrings tracked per connection (a virtio device has at most a few hundred queues;
#: a file naming more is not believed).
MAX_RINGS = 1024


class DataPlane:
    """The data-plane state of one connection: a :class:`RingTrack` per vring.

    ``trace`` is on once the capture holds ``notify`` frames (or the open frame
    says ``trace_notify``): only then does a missing kick or call mean anything.
    """

    def __init__(self) -> None:
        self.rings: dict[int, RingTrack] = {}
        #: vring -> its call fd as the wire says it reached the back-end (none: a proxy rule
        #: or addon dropped the SET_VRING_CALL, fd, nofd).  Fills ``call_fd`` of samples
        #: that lack it (captures of an older vuinspect), so those still tell a lost call.
        self.call_fds: dict[int, str] = {}
        self.trace = False
        self.samples = 0
        self.notifies = 0
        #: Problems on ring and notify messages (sampled and diagnosed): the session's
        #: ``problem_count`` counts those of the control messages only.
        self.problem_count = 0

    def ring(self, index: int) -> RingTrack | None:
        track = self.rings.get(index)
        if track is None and len(self.rings) < MAX_RINGS:
            track = self.rings[index] = RingTrack(index)
        return track

    def call_fd_sent(self, index: int, call_fd: str) -> None:
        """A SET_VRING_CALL for vring ``index`` on the wire: ``none`` (the proxy dropped it),
        ``fd`` or ``nofd``."""
        if index in self.call_fds or len(self.call_fds) < MAX_RINGS:
            self.call_fds[index] = call_fd

    def on_sample(
        self, info: dict[str, Any], receive_of: Any
    ) -> tuple[RingSample | None, list[tuple[str, str]], list[Finding]]:
        """A ``ring`` frame's JSON: (sample or None if damaged, problems, findings ended).

        Problems are ``(code, text)``: the sample's own (read by the sampler)
        and the diagnoses it raises.  ``receive_of(index)`` says whether that
        vring only holds buffers for the device to fill.
        """
        try:
            s = RingSample.from_json(info)
        except (ValueError, TypeError) as exc:
            self.problem_count += 1
            return None, [("ring_bad_sample", f"ring frame not understood: {exc}")], []
        if s.call_fd is None and s.vring in self.call_fds:
            s = replace(s, call_fd=self.call_fds[s.vring])  # what the sampler now writes
        self.samples += 1
        problems = [(p.code, p.text) for p in s.problems]
        track = self.ring(s.vring)
        if track is None:
            self.problem_count += len(problems)
            return s, problems, []
        receive = receive_of(s.vring)
        raised: list[Finding] = []
        ended: list[Finding] = []
        pending = track.pending_reset
        event = info.get("event")
        if pending is not None and event not in ("stop", "control", "tick"):
            # a new start, or a sample of a producer that writes no stop sample
            track.pending_reset = None
            raised += track.reset(pending, receive=receive, trace=self.trace)[0]
        r, e = track.add_sample(s, receive=receive, trace=self.trace)
        raised += r
        ended += e
        if event == "stop" and track.pending_reset is not None:  # the ring's last look
            track.pending_reset = None
            raised += track.reset(s.ts_ns, receive=receive, trace=self.trace)[0]
        problems.extend((f.code, f.text) for f in raised)
        self.problem_count += len(problems)
        return s, problems, ended

    def on_notify(self, info: dict[str, Any]) -> str | None:
        """A ``notify`` frame's JSON; returns why it is not understood (None if fine)."""
        vring, signal = info.get("vring"), info.get("signal")
        values = [info.get(k) for k in ("count", "first_ns", "last_ns")]
        if (
            not isinstance(vring, int)
            or isinstance(vring, bool)
            or vring < 0
            or signal not in ("kick", "call", "err")
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
        ):
            self.problem_count += 1
            return "notify frame not understood"
        self.notifies += 1
        self.trace = True
        track = self.ring(vring)
        if track is not None:
            track.add_notify(signal, *values)  # type: ignore[arg-type]  # (checked above)
        return None

    def on_reset(
        self, ts_ns: int, indices: list[int] | None, receive_of: Any, final: bool = False
    ) -> list[Finding]:
        """Rings stopped (GET_VRING_BASE: one; RESET_*/close: all): findings raised now.

        A stop on the wire is judged at the ring's next sample (the sampler's
        "stop" sample right after it, which holds the last progress); only a
        ``final`` one (the connection closed: no sample follows) is judged now.
        """
        out: list[Finding] = []
        if indices is None:
            self.call_fds.clear()  # (the back-end may or may not keep them: unknown)
        for i in list(self.rings) if indices is None else indices:
            track = self.rings.get(i)
            if track is None:
                continue
            if not final:
                if track.pending_reset is None:
                    track.pending_reset = ts_ns
                continue
            at = track.pending_reset if track.pending_reset is not None else ts_ns
            track.pending_reset = None
            raised, _ = track.reset(at, receive=receive_of(i), trace=self.trace)
            out.extend(raised)
        return out

    def on_restart(self, ts_ns: int, index: int, receive_of: Any) -> list[Finding]:
        """SET_VRING_BASE: a new ring start (a stop still pending is judged first)."""
        track = self.rings.get(index)
        if track is None:
            return []
        raised = []
        if track.pending_reset is not None:
            raised = track.reset(track.pending_reset, receive=receive_of(index), trace=self.trace)[
                0
            ]
            track.pending_reset = None
        track.restart(ts_ns)
        return raised

    @property
    def problems(self) -> int:
        """Old name of :attr:`problem_count`, read-only (as ``Session.problems``)."""
        warnings.warn(
            "DataPlane.problems is DataPlane.problem_count", DeprecationWarning, stacklevel=2
        )
        return self.problem_count

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "samples": self.samples,
            "notifies": self.notifies,
            "problem_count": self.problem_count,
            "rings": [self.rings[i].to_json() for i in sorted(self.rings)],
        }
