"""The Queues view's rows: per connection and vring, what ``session.dataplane`` knows.

No Textual here.  The model's decoding thread calls :meth:`RingRows.note` for
each ring message (one dict lookup and a bounded append), so the view knows
the latest ring frame of each vring (Enter shows its in-flight chains) and a
short progress history for the rate and the sparkline, whatever the capture's
size; a row is built from the session's :class:`~vuinspect.dataplane.track.RingTrack`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vuinspect.message import Message
from vuinspect.render import safe_text
from vuinspect.session import Session

from .ages import format_age

#: Progress points kept per vring (a sampler writes one per 100 ms while the ring moves).
HISTORY = 512
SPARK_BINS = 10
SPARK = " ▁▂▃▄▅▆▇█"
RATE_WINDOW_NS = 1_000_000_000
NS = 1_000_000_000


@dataclass(slots=True)
class RingHistory:
    last_row: int = -1  # the latest ring frame of this vring (model row)
    points: deque[tuple[int, int]] | None = None  # (ts_ns, progress so far)


class RingRows:
    """Per (conn, vring): the latest ring row and the progress history.

    Rows are kept only for the connections ``sessions`` (the pipeline's) still
    holds: a connection the pipeline dropped after its close (``keep_closed``, the
    live TUI) is dropped here when the next connection's first ring row comes, so a
    live session with reconnects holds rows for as many connections as the pipeline.
    ``sessions`` None keeps every connection.
    """

    def __init__(self, sessions: Mapping[int, Session] | None = None) -> None:
        self.sessions = sessions
        self.by_conn: dict[int, dict[int, RingHistory]] = {}

    def note(self, session: Session, row: int, msg: Message) -> None:
        vring = msg.payload.get("vring")
        if not isinstance(vring, int) or isinstance(vring, bool):
            return
        track = session.dataplane.rings.get(vring)
        if track is None:  # over the dataplane's bound: not tracked there either
            return
        rings = self.by_conn.get(msg.conn)
        if rings is None:
            self._forget_dropped()
            rings = self.by_conn[msg.conn] = {}
        h = rings.get(vring)
        if h is None:  # (at most the dataplane's vrings of a connection: it tracks them)
            h = rings[vring] = RingHistory(points=deque(maxlen=HISTORY))
        h.last_row = row
        assert h.points is not None
        h.points.append((msg.ts_ns, track.progress))

    def _forget_dropped(self) -> None:
        """Drop the rows of connections the pipeline no longer holds (once per new one)."""
        if self.sessions is not None:
            for conn in [c for c in self.by_conn if c not in self.sessions]:
                del self.by_conn[conn]

    def _history(self, conn: int, vring: int) -> RingHistory | None:
        rings = self.by_conn.get(conn)
        return rings.get(vring) if rings is not None else None

    def last_row(self, conn: int, vring: int) -> int | None:
        h = self._history(conn, vring)
        return h.last_row if h is not None and h.last_row >= 0 else None

    def points(self, conn: int, vring: int) -> list[tuple[int, int]]:
        h = self._history(conn, vring)
        return list(h.points) if h is not None and h.points is not None else []


def progress_at(points: list[tuple[int, int]], ts_ns: int) -> int:
    """Used slots advanced up to ``ts_ns`` (a step function over the points)."""
    i = bisect_right([p[0] for p in points], ts_ns) - 1
    return points[i][1] if i >= 0 else (points[0][1] if points else 0)


def recent_rate(points: list[tuple[int, int]], now_ns: int) -> float:
    """Used slots per second over the last second (0 on a ring that stopped moving)."""
    if not points:
        return 0.0
    return (
        (progress_at(points, now_ns) - progress_at(points, now_ns - RATE_WINDOW_NS))
        * NS
        / RATE_WINDOW_NS
    )


def sparkline(points: list[tuple[int, int]], now_ns: int, bins: int = SPARK_BINS) -> str:
    """Progress per time slice over the span of the history (newest on the right)."""
    if len(points) < 2:
        return " " * bins
    span = max(now_ns - points[0][0], bins * NS // 4)
    width = span / bins
    start = now_ns - span
    edges = [progress_at(points, int(start + i * width)) for i in range(bins + 1)]
    steps = [max(0, b - a) for a, b in zip(edges, edges[1:], strict=False)]
    top = max(steps)
    if top <= 0:
        return "▁" * bins
    return "".join(SPARK[0 if s == 0 else max(1, round(s * 8 / top))] for s in steps)


@dataclass(slots=True)
class QueueRow:
    """One line of the Queues view (texts, already escaped) plus where it came from."""

    conn: int
    vring: int
    cells: tuple[str, ...]
    state: str
    severity: str  # error | warning | ok: the row's colour


COLUMNS = (
    "conn",
    "vring",
    "state",
    "num",
    "avail",
    "used",
    "in flight",
    "rate/s",
    "recent",
    "last kick",
    "last call",
    "problems",
)


def _ago(ts: int | None, now_ns: int) -> str:
    return "-" if ts is None else format_age(max(0, now_ns - ts)) + " ago"


def _finding_text(f: Any, now_ns: int) -> str:
    if f.until_ns is None:
        return f"{f.code}: {f.in_flight} in flight for {format_age(max(0, now_ns - f.since_ns))}"
    return f"{f.code} resolved after {format_age(f.duration_ns or 0)} ({f.resolution})"


def queue_rows(sessions: list[Session], rings: RingRows, now_ns: int) -> list[QueueRow]:
    """Every tracked vring of every session, in connection and vring order."""
    out = []
    for s in sessions:
        dp = s.dataplane
        for idx in sorted(dp.rings):
            t = dp.rings[idx]
            last = t.last or next((x for x in reversed(t.samples) if x.ok), None)
            pts = rings.points(s.conn, idx)
            rate = recent_rate(pts, now_ns)
            vr = s.vrings.get(idx)
            if t.active:
                state = "stalled" if "backend_stalled" in t.active else "waiting"
            elif t.last is None or (vr is not None and not vr.started) or s.closed_ns is not None:
                state = "stopped"
            elif rate > 0:
                state = "running"
            else:
                state = "idle"
            problems = [_finding_text(f, now_ns) for f in t.active.values()]
            if t.ended:
                problems.append(
                    _finding_text(t.ended[-1], now_ns)
                    + (f" (+{len(t.ended) - 1} earlier)" if len(t.ended) > 1 else "")
                )
            trace = dp.trace
            cells = (
                f"c{s.conn}",
                str(idx),
                state,
                str(last.num) if last else "-",
                str(last.avail_idx) if last and last.ok else "-",
                str(last.used_idx) if last and last.ok else "-",
                str(last.in_flight) if last and last.ok else "-",
                f"{rate:,.0f}",
                sparkline(pts, now_ns),
                _ago(t.last_signal_ns.get("kick"), now_ns) if trace else "-",
                _ago(t.last_signal_ns.get("call"), now_ns) if trace else "-",
                "; ".join(problems) or "",
            )
            sev = (
                "error"
                if t.active
                else ("warning" if state == "stopped" and last and last.in_flight else "ok")
            )
            out.append(QueueRow(s.conn, idx, tuple(safe_text(c) for c in cells), state, sev))
    return out
