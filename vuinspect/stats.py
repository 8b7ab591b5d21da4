"""Statistics over decoded sessions: counts and reply latency per request and connection,
per vring the data plane's progress and notification counts (ring/notify frames), and
the proxy's rule and addon firings (the capture's note events, rules.py and addons.py).

Without a filter the sessions' own counters are used; with one, a :class:`Tally`
counts only the matching messages (like ``tshark -z ...,FILTER``) and the same
tables are built from it.  ``read --stats`` keeps each connection as a
:class:`ConnStats` once it closes (what the tables print, not its session).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .frames import DATAPLANE_KINDS, Frame
from .message import Message
from .pipeline import Pipeline, linked
from .render import safe_text
from .session import Session
from .state import MAX_PENDING, Latencies, RequestStats, count_request

#: Distinct (source, name, action) rows kept: a capture chooses the names, so a hostile
#: file with a million rule texts costs one "other" row, not a million.
MAX_FIRING_ROWS = 256
_OTHER = ("other", "(more distinct rules and addons)", "-")


class Firings:
    """Rule and addon firings, counted from the note events the proxy records with them.

    A note with ``rule`` (rules.py) or ``addon`` (addons.py) is one firing of it, or,
    with ``"fired": false``, one time it could not act (a rule with no failure reply
    for the message, an addon hook that raised or ran slow).
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[int]] = {}  # -> [fired, not fired]

    def add(self, msg: Message) -> None:
        if msg.kind != "note":
            return
        info = msg.info
        if "rule" in info:
            key = ("rule", str(info["rule"]), str(info.get("action", "-")))
        elif "addon" in info:
            hook = info.get("hook")
            name = f"{info['addon']}:{hook}" if hook else str(info["addon"])
            key = ("addon", name, str(info.get("action", "-")))
        else:
            return
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= MAX_FIRING_ROWS:
                key = _OTHER
                row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = [0, 0]
        row[0 if info.get("fired", True) is not False else 1] += 1

    def table(self) -> list[dict[str, Any]]:
        """One row per (source, rule text or addon:hook, action), most firings first."""
        order = sorted(self.rows.items(), key=lambda kv: (-kv[1][0] - kv[1][1], kv[0]))
        return [
            {"source": src, "name": name, "action": action, "fired": n, "not_fired": m}
            for (src, name, action), (n, m) in order
        ]


class _Counts:
    """A filter's counts of one connection (what it kept of the session's counters)."""

    __slots__ = ("messages", "problem_count", "stats")

    def __init__(self) -> None:
        self.stats: dict[str, RequestStats] = {}
        self.messages = 0
        self.problem_count = 0


@dataclass(slots=True)
class ConnStats:
    """What ``--stats`` prints of one connection, without its session: no message, no
    pairing queue, so its size does not grow with the connection's messages (``stats``
    is bounded by MAX_KINDS and Latencies, ``rings`` by MAX_RINGS, ``waiting`` is runs)."""

    conn: int
    label: str
    orientation: Any
    device: str | None
    started_ns: int | None
    end_ns: int | None
    close_reason: str | None
    #: the requests still owed a reply, oldest first, as [name, how many in a row]
    waiting: list[list[Any]]
    #: the data plane's rows (:func:`ring_table`'s, without ``conn``)
    rings: list[dict[str, Any]]
    stats: dict[str, RequestStats]
    messages: int
    problem_count: int

    @classmethod
    def of(cls, s: Session) -> ConnStats:
        """The session's facts and counters now (its stats dict is shared, not copied)."""
        waiting: list[list[Any]] = []
        for p in s.owed():
            name = p.message.name
            if waiting and waiting[-1][0] == name:
                waiting[-1][1] += 1
            else:
                waiting.append([name, 1])
        return cls(
            s.conn,
            s.label,
            s.info.get("orientation"),
            s.device,
            s.started_ns,
            s.closed_ns if s.closed_ns is not None else s.last_ns,
            s.close_reason,
            waiting,
            _ring_rows(s),
            s.stats,
            s.messages,
            s.problem_count,
        )

    def counted(self, counts: _Counts) -> ConnStats:
        """These facts with a filter's counts."""
        return replace(
            self, stats=counts.stats, messages=counts.messages, problem_count=counts.problem_count
        )

    def merge(self, later: ConnStats) -> None:
        """Add a later session of the same connection number (frames after its close)."""
        if later.label != f"conn {later.conn}":  # (it was opened again: its own words)
            self.label, self.orientation, self.device = later.label, later.orientation, later.device
        if later.close_reason is not None or self.close_reason is None:
            self.end_ns = _later(self.end_ns, later.end_ns)
            self.close_reason = later.close_reason or self.close_reason
        self.started_ns = self.started_ns if self.started_ns is not None else later.started_ns
        waiting = self.waiting + later.waiting  # (a session waits on at most 2 queues' worth)
        while sum(n for _, n in waiting) > 2 * MAX_PENDING:
            waiting.pop(0)
        self.waiting = waiting
        by_vring = {row["vring"]: row for row in (*self.rings, *later.rings)}  # the later's
        self.rings = [by_vring[v] for v in sorted(by_vring)]
        stats = dict(self.stats)
        for key, st in later.stats.items():
            mine = stats.get(key)
            if mine is None:
                stats[key] = st
                continue
            stats[key] = both = RequestStats(
                mine.count + st.count,
                mine.replies + st.replies,
                mine.problem_count + st.problem_count,
            )
            for lat in (mine, st):
                if lat.replies:
                    both.latencies_us.merge(lat.latencies_us)
        self.stats = stats
        self.messages += later.messages
        self.problem_count += later.problem_count

    @property
    def waiting_names(self) -> list[str]:
        return [name for name, n in self.waiting for _ in range(n)]


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _ring_rows(s: Session) -> list[dict[str, Any]]:
    out = []
    for row in s.dataplane.to_json()["rings"]:
        last = row.pop("last") or {}
        row.pop("ended")
        active = row.pop("active")
        out.append(
            {
                **row,
                "num": last.get("num"),
                "layout": last.get("layout"),
                "avail_idx": last.get("avail_idx"),
                "used_idx": last.get("used_idx"),
                "problems": [f["code"] for f in active],
            }
        )
    return out


def _summary(s: Session | ConnStats) -> ConnStats:
    return s if isinstance(s, ConnStats) else ConnStats.of(s)


#: Closed sessions ``read --stats`` leaves in the pipeline: frames a connection number
#: gets soon after its close go to the same session, as ``read`` decodes them; past this
#: many later closes its row is taken and the session dropped.
KEEP_CLOSED = 64


class Tally:
    """``read --stats``: each connection kept as a :class:`ConnStats` once it is done (its
    session closed and :data:`KEEP_CLOSED` later ones closed since its last frame), so a
    capture of many connections holds no session, message or queue of a finished one.

    ``filtered``: count only the messages given to :meth:`add` (what a filter kept, like
    ``tshark -z ...,FILTER``), rows only for connections with one; otherwise the
    sessions' own counters, a row per connection in the order of its first frame.
    """

    def __init__(self, filtered: bool = False, device: str | None = None) -> None:
        self.filtered = filtered
        self.firings = Firings()
        self.pipeline = Pipeline(device=device, sinks=[self])
        self._order: dict[int, None] = {}  # conns by first frame (the pipeline's order)
        self._closed: OrderedDict[int, None] = OrderedDict()  # closed, by their last frame
        self._kept: dict[int, ConnStats] = {}  # conn -> its row once its session is gone
        self._counts: dict[int, _Counts] = {}  # conn -> a filter's counts

    def frames(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """``frames``, noting the order connections appear in and which are still heard."""
        order, closed = self._order, self._closed
        for frame in frames:
            conn = frame.conn
            if conn not in order:
                order[conn] = None
            elif conn in closed:
                closed.move_to_end(conn)
            yield frame

    def on_close(self, session: Session) -> None:
        closed = self._closed
        closed[session.conn] = None
        closed.move_to_end(session.conn)
        while len(closed) > KEEP_CLOSED:
            self._done(closed.popitem(last=False)[0])

    def _done(self, conn: int) -> None:
        """Take the row of ``conn``'s session and drop the session."""
        session = self.pipeline.sessions.get(conn)
        if session is None:
            return
        self.pipeline.forget(conn)
        row = ConnStats.of(session)
        had = self._kept.get(conn)
        if had is None:
            self._kept[conn] = row
        else:  # (frames long after its close made a new session)
            had.merge(row)

    def add(self, msg: Message) -> None:
        """One message the filter kept."""
        if msg.kind == "note":
            self.firings.add(msg)
        if msg.is_event or msg.kind in DATAPLANE_KINDS:
            return
        counts = self._counts.get(msg.conn)
        if counts is None:
            counts = self._counts[msg.conn] = _Counts()
        counts.messages += 1
        counts.problem_count += count_request(counts.stats, msg)

    def read(
        self, frames: Iterable[Frame], predicate: Callable[[Message], bool] | None = None
    ) -> list[ConnStats]:
        """Read everything; the rows.  With ``predicate``, messages come as ``read``
        prints them (a request once its reply is seen)."""
        frames = self.frames(frames)
        if predicate is None:
            for msg in self.pipeline.run(frames):
                if msg.kind == "note":
                    self.firings.add(msg)
        else:
            for msg in linked(self.pipeline, frames):
                if predicate(msg):
                    self.add(msg)
        return self.finish()

    def finish(self) -> list[ConnStats]:
        """The rows, once the pipeline has read everything (its sessions still open too)."""
        for conn in list(self.pipeline.sessions):
            self._done(conn)
        self._closed.clear()
        kept = self._kept
        if not self.filtered:
            return [kept[c] for c in self._order if c in kept]
        return [
            (
                kept.get(c)
                or ConnStats(c, f"conn {c}", None, None, None, None, None, [], [], {}, 0, 0)
            ).counted(counts)
            for c, counts in self._counts.items()
        ]


def tally(
    frames: Iterable[Frame],
    predicate: Callable[[Message], bool] | None = None,
    device: str | None = None,
) -> tuple[list[ConnStats], Firings]:
    """``read --stats`` [``--filter``]: the connections' rows and the rule firings."""
    t = Tally(filtered=predicate is not None, device=device)
    return t.read(frames, predicate), t.firings


def _latency_json(lat: Latencies) -> dict[str, Any]:
    return {"p50": lat.percentile(50), "p99": lat.percentile(99), "max": lat.max}


def request_table(sessions: Sequence[Session | ConnStats]) -> list[dict[str, Any]]:
    """One row per (channel, request name) over all sessions, most frequent first."""
    rows: dict[str, dict[str, Any]] = {}
    for s in sessions:
        for key, st in s.stats.items():
            channel, name = key.split(":", 1)
            row = rows.setdefault(
                key,
                {
                    "channel": channel,
                    "name": name,
                    "requests": 0,
                    "replies": 0,
                    "problem_count": 0,
                    "latencies": Latencies(),
                },
            )
            row["requests"] += st.count
            row["replies"] += st.replies
            row["problem_count"] += st.problem_count
            if st.replies:  # (asking a kind without replies for them would make its Latencies)
                row["latencies"].merge(st.latencies_us)
    out = []
    for row in rows.values():
        lat = row.pop("latencies")
        row["problems"] = row["problem_count"]  # the old key, kept as an alias of problem_count
        row["latency_us"] = {**_latency_json(lat), "n": lat.n}
        out.append(row)
    out.sort(key=lambda r: (-r["requests"] - r["replies"], r["channel"], r["name"]))
    return out


def connection_table(sessions: Sequence[Session | ConnStats]) -> list[dict[str, Any]]:
    out = []
    for c in map(_summary, sessions):
        lat = Latencies()
        for st in c.stats.values():
            if st.replies:
                lat.merge(st.latencies_us)
        start, end = c.started_ns, c.end_ns
        out.append(
            {
                "conn": c.conn,
                "label": c.label,
                "orientation": c.orientation,
                "device": c.device,
                "messages": c.messages,
                "problem_count": c.problem_count,
                "problems": c.problem_count,  # the old key, kept as an alias of problem_count
                "duration_s": (end - start) / 1e9
                if start is not None and end is not None
                else None,
                "close_reason": c.close_reason,
                "closed": c.close_reason,  # the old key, kept as an alias of close_reason
                "waiting": c.waiting_names,
                "latency_us": _latency_json(lat),
            }
        )
    return out


def ring_table(sessions: Sequence[Session | ConnStats]) -> list[dict[str, Any]]:
    """One row per (connection, vring) with samples or notifications: its progress."""
    return [{"conn": c.conn, **row} for c in map(_summary, sessions) for row in c.rings]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_stats(
    sessions: Sequence[Session | ConnStats], filter_text: str = "", firings: Firings | None = None
) -> str:
    """The text tables; with ``filter_text`` a first line says they cover matching messages."""
    head = [f"Statistics of the messages matching: {filter_text}", ""] if filter_text else []
    lines = [
        *head,
        "Requests",
        f"{'channel':<8} {'name':<34} {'req':>7} {'reply':>7} {'prob':>5} "
        f"{'p50 µs':>9} {'p99 µs':>9} {'max µs':>9}",
    ]
    for r in request_table(sessions):
        lat = r["latency_us"]
        lines.append(
            f"{r['channel']:<8} {r['name']:<34} {r['requests']:>7} {r['replies']:>7} "
            f"{r['problem_count']:>5} {_fmt(lat['p50']):>9} {_fmt(lat['p99']):>9} "
            f"{_fmt(lat['max']):>9}"
        )
    lines += [
        "",
        "Connections",
        f"{'conn':>5} {'messages':>9} {'problems':>8} {'p50 µs':>9} {'p99 µs':>9}  label / end",
    ]
    for c in connection_table(sessions):
        lat = c["latency_us"]
        end = safe_text(c["close_reason"]) if c["close_reason"] else "open"  # a peer's words
        waiting = f" waiting: {', '.join(c['waiting'])}" if c["waiting"] else ""
        lines.append(
            f"{c['conn']:>5} {c['messages']:>9} {c['problem_count']:>8} {_fmt(lat['p50']):>9} "
            f"{_fmt(lat['p99']):>9}  {safe_text(c['label'])} ({end}){waiting}"
        )
    rings = ring_table(sessions)
    if rings:
        lines += [
            "",
            "Vrings (data plane)",
            f"{'conn':>5} {'vring':>5} {'num':>6} {'avail':>6} {'used':>6} {'inflt':>5} "
            f"{'progress':>9} {'used/s':>9} {'kicks':>7} {'calls':>7} {'errs':>5} "
            f"{'samples':>7}  problems",
        ]
        for r in rings:
            lines.append(
                f"{r['conn']:>5} {r['vring']:>5} {_dash(r['num']):>6} {_dash(r['avail_idx']):>6} "
                f"{_dash(r['used_idx']):>6} {_dash(r['in_flight']):>5} {r['progress']:>9} "
                f"{r['rate']:>9.1f} {r['kicks']:>7} {r['calls']:>7} {r['errs']:>5} "
                f"{r['samples']:>7}  {', '.join(r['problems']) or '-'}"
            )
    rows = firings.table() if firings is not None else []
    if rows:
        lines += [
            "",
            "Rules and addons (proxy firings recorded in the capture)",
            f"{'source':<6} {'action':<14} {'fired':>7} {'not':>5}  rule / addon:hook",
        ]
        for r in rows:
            lines.append(
                f"{r['source']:<6} {safe_text(r['action'])[:14]:<14} {r['fired']:>7} "
                f"{r['not_fired']:>5}  {safe_text(r['name'])}"
            )
    return "\n".join(lines)


def _dash(v: Any) -> str:
    return "-" if v is None else str(v)
