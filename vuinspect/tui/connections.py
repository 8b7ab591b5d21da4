"""The connections list: every session, its socket, orientation, lifetime and how it ended."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message as TMessage
from textual.widgets import DataTable

from vuinspect.render import safe_text
from vuinspect.session import Session

from .ages import format_age
from .ranking import Ranking
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


#: Rows a connection view builds at most: Textual costs ~2 ms a row (add, then measure), so
#: a capture of 50,000 connections froze the TUI for a minute on showing the view.
WINDOW = 200


@dataclass
class Window:
    """The sessions a view shows (at most ``WINDOW``), and how many it leaves out each side."""

    sessions: list[Session]
    start: int
    before: int
    after: int

    def more_lines(self) -> tuple[str | None, str | None]:
        """What the rows above and below the window say (None: all sessions fit)."""
        if not (self.before or self.after):
            return None, None
        n = self.before + len(self.sessions) + self.after
        first, last = self.start + 1, self.start + len(self.sessions)
        head = f"… {first:,}-{last:,} of {n:,}: waiting, problems, open first; [ ] page"
        tail = f"… {self.after:,} more below: ] next page" if self.after else None
        return head, tail


def window(
    sessions: list[Session], start: int, conn: int | None, ranking: Ranking | None = None
) -> Window:
    """``WINDOW`` sessions from ``start`` (call under the model's lock).

    All sessions in their order when they fit; otherwise ranked (``rank``: the ones to
    look at first) and cut, moved to hold ``conn`` (the chosen one) if it is outside.
    ``ranking`` (the model's, of the same sessions) keeps the order between refreshes:
    without it every call ranks every session.
    """
    n = len(sessions)
    if n <= WINDOW:
        return Window(sessions, 0, 0, 0)
    if ranking is None:
        ranking = Ranking({s.conn: s for s in sessions})
    n = len(ranking)  # the model's sessions now (a live one may have more than the list)
    page = ranking.page(start, WINDOW)
    if conn is not None and not any(s.conn == conn for s in page):
        at = ranking.index(conn)
        if at is not None:
            start = at - WINDOW // 2
    start = max(0, min(start, n - WINDOW))
    page = ranking.page(start, WINDOW)
    return Window(page, start, start, max(0, n - start - len(page)))


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


class Paged:
    """A view that lists a page of ``WINDOW`` connections, moved by ``[`` and ``]``
    (the Connections and State views)."""

    _start = 0  # the page's first session (ranked), past WINDOW connections
    _after = 0  # sessions after the page
    _paged = False  # a page key moved the page: the view goes to its top

    def action_page(self, step: int) -> None:
        """Show the previous or next ``WINDOW`` connections."""
        if (step < 0 and not self._start) or (step > 0 and not self._after):
            return
        self._start = max(0, self._start + step * WINDOW)
        self._paged = True
        refresh = getattr(getattr(self, "app", None), "refresh_view", None)
        if refresh is not None:
            refresh()


class ConnectionsView(Paged, DataTable):
    """One row per session; Enter opens its state, ``f`` filters the list to it.

    Past ``WINDOW`` connections the rows are a page of them, those to look at on top
    (``rank``); ``[`` and ``]`` page, a row above and one below say where and how many more.
    """

    BINDINGS = [
        Binding("enter", "open_state", "State"),
        Binding("f", "filter_conn", "Filter to conn"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
    ]

    _shown: tuple[object, ...] = ()  # what the rows show now (up line, rows, down line)

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
        self,
        sessions: list[Session],
        now_ns: int,
        lock: AbstractContextManager[object],
        ranking: Ranking | None = None,
    ) -> None:
        chosen = None if self._paged else self._conn()
        with lock:
            win = window(sessions, self._start, chosen, ranking)
            rows = connection_rows(win.sessions, now_ns)
        self._start, self._after = win.start, win.after
        up, down = win.more_lines()
        if (up, rows, down) == self._shown:
            return  # nothing changed: rebuilding costs ~2 ms a row
        self._shown = (up, rows, down)
        cursor = self.cursor_row
        self.clear()
        if up:
            self._more_row(up, "up")
        for r in rows:
            self.add_row(*(Text(c) for c in r), key=r[0])  # Text: no markup from a capture
        if down:
            self._more_row(down, "down")
        if not rows:
            return
        if not (up or down):
            self.move_cursor(row=min(cursor, len(rows) - 1))
            return
        conns = [r[0] for r in rows]
        at = 0 if self._paged or str(chosen) not in conns else conns.index(str(chosen))
        self._paged = False
        self.move_cursor(row=at + (1 if up else 0))

    def _more_row(self, text: str, key: str) -> None:
        what, _, how = text.removeprefix("… ").partition(": ")  # two cells: columns stay narrow
        cells = ["…", what, "", how] + [""] * (len(COLUMNS) - 4)
        self.add_row(*(Text(c, style="dim") for c in cells), key=key)

    def _conn(self) -> int | None:
        if not self.row_count:
            return None
        cell = str(self.get_row_at(self.cursor_row)[0])
        return int(cell) if cell.isdigit() else None  # None: a "… more" row

    def _more_at_cursor(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return key if key in ("up", "down") else None

    def action_open_state(self) -> None:
        more = self._more_at_cursor()
        if more is not None:
            self.action_page(-1 if more == "up" else 1)
            return
        conn = self._conn()
        if conn is not None:
            self.post_message(self.OpenState(conn))

    def action_filter_conn(self) -> None:
        conn = self._conn()
        if conn is not None:
            self.post_message(self.FilterConn(conn))
