"""The connections list: every session, its socket, orientation, lifetime and how it ended."""

from __future__ import annotations

from contextlib import AbstractContextManager

from rich.text import Text
from textual.binding import Binding
from textual.message import Message as TMessage
from textual.widgets import DataTable

from vuinspect.render import safe_text
from vuinspect.session import Session

from .ages import format_age
from .rowtext import format_time

COLUMNS = (
    "conn",
    "socket",
    "device",
    "waiting on",
    "ended because",
    "orientation",
    "start (UTC)",
    "end (UTC)",
    "duration",
    "messages",
    "problems",
)


def connection_rows(sessions: list[Session], now_ns: int) -> list[tuple[str, ...]]:
    """The cells of each session's row; labels and reasons from the capture come escaped."""
    rows = []
    for s in sessions:
        start = s.started_ns
        end = s.closed_ns
        last = end if end is not None else (s.last_ns if not s.info or now_ns == 0 else now_ns)
        owed = s.owed()
        if owed and end is None:
            p = owed[0]
            waiting = f"{p.owner}: {p.message.name} ({format_age(max(0, now_ns - p.since_ns))})"
        elif owed:
            waiting = f"{owed[0].message.name} never answered"
        else:
            waiting = "-"
        rows.append(
            tuple(
                safe_text(c)
                for c in (
                    str(s.conn),
                    s.label,
                    s.device or "?",
                    waiting,
                    s.close_reason or "-",
                    str(s.info.get("orientation", "?")),
                    format_time(start, "abs", None, None) if start is not None else "-",
                    format_time(end, "abs", None, None) if end is not None else "open",
                    format_age(last - start) if start is not None and last is not None else "-",
                    str(s.messages),
                    str(s.problem_count),
                )
            )
        )
    return rows


class ConnectionsView(DataTable):
    """One row per session; Enter opens its state, ``f`` filters the list to it."""

    BINDINGS = [
        Binding("enter", "open_state", "State"),
        Binding("f", "filter_conn", "Filter to conn"),
    ]

    class OpenState(TMessage):
        def __init__(self, conn: int) -> None:
            super().__init__()
            self.conn = conn

    class FilterConn(TMessage):
        def __init__(self, conn: int) -> None:
            super().__init__()
            self.conn = conn

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*COLUMNS)

    def update_sessions(
        self, sessions: list[Session], now_ns: int, lock: AbstractContextManager[object]
    ) -> None:
        with lock:
            rows = connection_rows(sessions, now_ns)
        cursor = self.cursor_row
        self.clear()
        for r in rows:
            self.add_row(*(Text(c) for c in r), key=r[0])  # Text: no markup from a capture
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def _conn(self) -> int | None:
        if not self.row_count:
            return None
        return int(str(self.get_row_at(self.cursor_row)[0]))

    def action_open_state(self) -> None:
        conn = self._conn()
        if conn is not None:
            self.post_message(self.OpenState(conn))

    def action_filter_conn(self) -> None:
        conn = self._conn()
        if conn is not None:
            self.post_message(self.FilterConn(conn))
