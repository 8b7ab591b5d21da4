"""The ``5 Queues`` view: per connection and vring, the rings as the samples show them.

Size, indices, requests in flight, the completion rate with a sparkline of
recent progress, the last kick and call (with ``--trace-notify``), a state
(running / stalled / waiting / idle / stopped) and the data-plane findings,
active and resolved.  Enter opens the in-flight descriptor chains of the
vring's latest ring frame.  Every text from the capture is escaped.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message as TMessage
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from vuinspect.dataplane.text import detail_lines, ring_summary
from vuinspect.hints import NO_RINGS
from vuinspect.render import safe_text
from vuinspect.session import Session

from .queues_data import COLUMNS, RingRows, queue_rows

STATE_STYLE = {
    "running": "green",
    "stalled": "bold red",
    "waiting": "bold yellow",
    "idle": "dim",
    "stopped": "yellow",
}
ROW_STYLE = {"error": "red", "warning": "yellow", "ok": ""}
HINT = (
    "Enter: in-flight chains of the vring's latest ring frame   rate: used slots/s   "
    "R: ring frames in the list"
)
EMPTY_TEXT = f"{NO_RINGS} to see the virtqueues here"


class QueuesView(DataTable):
    """The vring table; Enter shows the in-flight chains of the row's latest ring frame."""

    BINDINGS = [Binding("enter", "open_chains", "In-flight chains")]

    class OpenChains(TMessage):
        def __init__(self, conn: int, vring: int) -> None:
            super().__init__()
            self.conn = conn
            self.vring = vring

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.keys: list[tuple[int, int]] = []
        self.lines: list[Text] = []  # per row: the whole story, under the table

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for c in COLUMNS:
            self.add_column(c, key=c)

    def update_queues(
        self,
        sessions: list[Session],
        rings: RingRows,
        now_ns: int,
        lock: AbstractContextManager[Any],
    ) -> None:
        with lock:
            rows = queue_rows(sessions, rings, now_ns)
        cursor = self.cursor_row
        self.clear()
        self.keys = [(r.conn, r.vring) for r in rows]
        self.lines = [
            Text(
                f"c{r.conn} vring {r.vring} {r.state}"
                + (f": {r.cells[-1]}" if r.cells[-1] else ""),
                style=ROW_STYLE[r.severity],
            )
            for r in rows
        ]
        for r in rows:
            cells = [
                Text(c, style=ROW_STYLE[r.severity] if i == len(r.cells) - 1 else "")
                for i, c in enumerate(r.cells)
            ]
            cells[COLUMNS.index("state")].stylize(STATE_STYLE.get(r.state, ""))
            cells[COLUMNS.index("recent")].stylize("cyan")
            self.add_row(*cells)
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))
        hint = self.screen.query("#queues-hint")
        if hint:
            hint.first(Static).update(Text(HINT if rows else EMPTY_TEXT, style="dim"))
        self._show_line()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_line()

    def _show_line(self) -> None:
        """The highlighted row's state and problems in full (the table may be cut)."""
        found = self.screen.query("#queues-line")
        if found:
            row = self.cursor_row
            found.first(Static).update(self.lines[row] if 0 <= row < len(self.lines) else "")

    def action_open_chains(self) -> None:
        if self.row_count and 0 <= self.cursor_row < len(self.keys):
            self.post_message(self.OpenChains(*self.keys[self.cursor_row]))


def chains_text(conn: int, vring: int, frame: int | None, payload: dict[str, Any] | None) -> Text:
    """What the chains screen shows: the sample's line, then its chains (or why none)."""
    t = Text()
    if payload is None or frame is None:
        t.append(f"c{conn} vring {vring}: no ring frame", style="dim")
        return t
    t.append(safe_text(f"c{conn} frame {frame}: {ring_summary(payload)}") + "\n", style="bold")
    lines = detail_lines(payload)
    if lines:
        t.append("\n".join(line[6:] for line in lines))  # the lines are indented for read
    elif isinstance(payload.get("in_flight"), int) and payload["in_flight"] > 0:
        t.append(
            "This sample holds no descriptor chains (the sampler stores them while "
            "requests wait: in keepalive and stop samples).",
            style="yellow",
        )
    else:
        t.append("Nothing in flight in this sample: no descriptor chains.", style="dim")
    return t


class ChainsScreen(ModalScreen[None]):
    """The in-flight descriptor chains of one ring frame (Esc closes)."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    ChainsScreen { align: center middle; }
    ChainsScreen > VerticalScroll { width: 90%; max-width: 120; max-height: 90%;
                                    border: round $accent; background: $surface;
                                    padding: 0 1; height: auto; }
    """

    def __init__(self, title: str, body: Text) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with VerticalScroll() as v:
            v.border_title = self.title_text
            v.border_subtitle = "Esc closes"
            yield Static(self.body, id="chains-body")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
