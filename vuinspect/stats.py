"""Statistics over decoded sessions: counts and reply latency per request and connection,
per vring the data plane's progress and notification counts (ring/notify frames), and
the proxy's rule and addon firings (the capture's note events, rules.py and addons.py).

Without a filter the sessions' own counters are used; with one, a :class:`Tally`
counts only the matching messages (like ``tshark -z ...,FILTER``) and the same
tables are built from it.
"""

from __future__ import annotations

from typing import Any

from .frames import DATAPLANE_KINDS
from .message import Message
from .render import safe_text
from .session import Session
from .state import Latencies, RequestStats, count_request


class _Counted:
    """A session seen through a filter: its own metadata, the tally's counters."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.stats: dict[str, RequestStats] = {}
        self.messages = 0
        self.problem_count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


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


class Tally:
    """Counts of the messages a filter kept, per connection and request (as Session does)."""

    def __init__(self) -> None:
        self.views: dict[int, _Counted] = {}
        self.firings = Firings()

    def add(self, msg: Message, session: Session | None) -> None:
        if msg.kind == "note":
            self.firings.add(msg)
        if msg.is_event or msg.kind in DATAPLANE_KINDS or session is None:
            return
        view = self.views.get(msg.conn)
        if view is None or view._session is not session:
            view = self.views[msg.conn] = _Counted(session)
        view.messages += 1
        view.problem_count += count_request(view.stats, msg)

    def sessions(self) -> list[Any]:
        return list(self.views.values())


def _latency_json(lat: Latencies) -> dict[str, Any]:
    return {"p50": lat.percentile(50), "p99": lat.percentile(99), "max": lat.max}


def request_table(sessions: list[Session]) -> list[dict[str, Any]]:
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
                    "problems": 0,
                    "latencies": Latencies(),
                },
            )
            row["requests"] += st.count
            row["replies"] += st.replies
            row["problems"] += st.problem_count
            if st.replies:  # (asking a kind without replies for them would make its Latencies)
                row["latencies"].merge(st.latencies_us)
    out = []
    for row in rows.values():
        lat = row.pop("latencies")
        row["latency_us"] = {**_latency_json(lat), "n": lat.n}
        out.append(row)
    out.sort(key=lambda r: (-r["requests"] - r["replies"], r["channel"], r["name"]))
    return out


def connection_table(sessions: list[Session]) -> list[dict[str, Any]]:
    out = []
    for s in sessions:
        lat = Latencies()
        for st in s.stats.values():
            if st.replies:
                lat.merge(st.latencies_us)
        start = s.started_ns
        end = s.closed_ns if s.closed_ns is not None else s.last_ns
        out.append(
            {
                "conn": s.conn,
                "label": s.label,
                "orientation": s.info.get("orientation"),
                "device": s.device,
                "messages": s.messages,
                "problems": s.problem_count,
                "duration_s": (end - start) / 1e9
                if start is not None and end is not None
                else None,
                "closed": s.close_reason,
                "waiting": [p.message.name for p in s.owed()],
                "latency_us": _latency_json(lat),
            }
        )
    return out


def ring_table(sessions: list[Session]) -> list[dict[str, Any]]:
    """One row per (connection, vring) with samples or notifications: its progress."""
    out = []
    for s in sessions:
        for row in s.dataplane.to_json()["rings"]:
            last = row.pop("last") or {}
            row.pop("ended")
            active = row.pop("active")
            out.append(
                {
                    "conn": s.conn,
                    **row,
                    "num": last.get("num"),
                    "layout": last.get("layout"),
                    "avail_idx": last.get("avail_idx"),
                    "used_idx": last.get("used_idx"),
                    "problems": [f["code"] for f in active],
                }
            )
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_stats(
    sessions: list[Session], filter_text: str = "", firings: Firings | None = None
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
            f"{r['problems']:>5} {_fmt(lat['p50']):>9} {_fmt(lat['p99']):>9} "
            f"{_fmt(lat['max']):>9}"
        )
    lines += [
        "",
        "Connections",
        f"{'conn':>5} {'messages':>9} {'problems':>8} {'p50 µs':>9} {'p99 µs':>9}  label / end",
    ]
    for c in connection_table(sessions):
        lat = c["latency_us"]
        end = c["closed"] or "open"
        waiting = f" waiting: {', '.join(c['waiting'])}" if c["waiting"] else ""
        lines.append(
            f"{c['conn']:>5} {c['messages']:>9} {c['problems']:>8} {_fmt(lat['p50']):>9} "
            f"{_fmt(lat['p99']):>9}  {c['label']} ({end}){waiting}"
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
