"""Connections that never reached their target, said once per series, not once each.

A client that reconnects as soon as it is closed (dpdk-testpmd ``client=1``)
against a missing back-end fails thousands of times a second.  The first
failure of a series is reported in full (the connection's open and close
frames, one log line); the rest are counted and said together in one capture
note and one line, at least every ``FAILURE_REPORT_S`` while they go on, and
when the series ends (a connection reaches the target, or the proxy stops).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vuinspect.frames import Frame, event_frame

#: Coalesced connect failures are reported at least this often while they go on.
FAILURE_REPORT_S = 10.0


@dataclass
class _Series:
    """Connect failures of one route since its last report."""

    first: int  # the connection reported in full
    pending: int = 0
    last: int = 0
    reason: str = ""
    since: float = 0.0
    reported: float = 0.0


class Failures:
    """The connect failures of every route, keyed by listen path (thread-safe).

    ``emit`` takes the note frames (None: nothing records); ``say`` one line.
    """

    def __init__(self, emit: Callable[[Frame], None] | None, say: Callable[[str], None]) -> None:
        self._emit = emit
        self._say = say
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        #: Connections that never reached their target, in all.
        self.count = 0

    def failed(self, key: str, conn: int, reason: str, in_full: Callable[[], None]) -> None:
        """Connection ``conn`` failed: the first of a series ``in_full()`` and a line; the
        rest coalesced (said when due)."""
        now = time.monotonic()
        with self._lock:
            self.count += 1
            f = self._series.get(key)
            if f is None:
                self._series[key] = _Series(first=conn, reported=now)
            else:
                if not f.pending:
                    f.since = now
                f.pending += 1
                f.last = conn
                f.reason = reason
                due = now - f.reported >= FAILURE_REPORT_S
        if f is None:
            in_full()
            self._say(f"connection {conn}: {reason}")
        elif due:
            self.report(key)

    def connected(self, key: str) -> None:
        """A connection reached its target: the series before it (if any) ends."""
        if self._series:
            self.report(key, end=True)

    def end_all(self) -> None:
        """The proxy stops: every series ends, said."""
        for key in list(self._series):
            self.report(key, end=True)

    def report(self, key: str, end: bool = False) -> None:
        """One capture note and one line for the failures coalesced since the last report."""
        now = time.monotonic()
        with self._lock:
            f = self._series.get(key)
            if f is None:
                return
            if end:
                del self._series[key]
            n, f.pending, f.reported = f.pending, 0, now
        if not n:
            return
        text = (
            f"{n} more connection(s) to {key} closed unrelayed in {now - f.since:.1f} s "
            f"(up to connection {f.last}; reported together): {f.reason}"
        )
        if self._emit is not None:
            self._emit(event_frame("note", time.time_ns(), f.first, {"text": text}))
        self._say(f"connection {f.first}: {text}")
