"""The vuinspect TUI: one app for a live proxy feed and for a capture file.

``VuInspectApp(source)`` takes a :class:`~vuinspect.tui.sources.Source`
(``FileSource(path)`` for ``vuinspect view``, ``LiveSource()`` whose ``push``
is the proxy's sink) and shows four views: the message list with its detail
tree and hex pane, the per-connection state, the connections, and the request
statistics.  Decoding runs in the model's thread; the app polls the model ten
times a second and repaints only what changed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Input, Static

from vuinspect.render import safe_text
from vuinspect.session import Session

from . import intercept
from .connections import ConnectionsView
from .detail import DetailTree
from .filter_bar import FilterBar, FilterInput
from .help import HelpScreen
from .hexview import HexView, narrow_for
from .intercept import Control, Holds
from .list_actions import ListActions
from .message_list import ColumnHeader, MessageList
from .model import Model
from .offsets import field_ranges, range_for
from .palette import palette_commands
from .prompt import PromptBar
from .queues import ChainsScreen, QueuesView, chains_text
from .rowtext import format_time
from .sources import Source
from .state_view import StateView
from .stats import StatsView
from .title import VIEWS, title_text

DETAIL_DELAY = 0.08  # s: the detail pane waits for the cursor to rest this long
TITLE_PADDING = 2  # cells of the title line's padding (app.tcss: #title)


class VuInspectApp(ListActions):
    """Inspect vhost-user traffic from ``source`` (a capture file or a live proxy feed)."""

    CSS_PATH = "app.tcss"
    TITLE = "vuinspect"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        # Esc then q typed quickly arrives as alt+q from a real terminal: still a quit.
        Binding("alt+q", "quit_now", "Quit", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("1", "view('messages')", "List", show=False),
        Binding("2", "view('state')", "State"),
        Binding("3", "view('connections')", "Conns"),
        Binding("4", "view('stats')", "Stats"),
        Binding("5", "view('queues')", "Queues"),
        Binding("f", "focus_filter", "Filter"),
        Binding("slash", "search", "Search"),
        Binding("n", "search_next", "Next", show=False),
        Binding("N", "search_prev", "Prev", show=False),
        Binding("colon", "goto", "Go to"),
        Binding("r", "pair", "Pair"),
        Binding("m", "mark", "Mark"),
        Binding("apostrophe", "next_mark", "Next mark", show=False),
        Binding("quotation_mark", "prev_mark", "Prev mark", show=False),
        Binding("t", "time_mode", "Time"),
        Binding("F", "follow", "Follow"),
        Binding("R", "toggle_rings", "Rings"),
        Binding("w", "save", "Save"),
        Binding("c", "comment", "Comment"),
        # The intercept (a live proxy's TUI: intercept.py): i sets what is held, then
        # a accept, e edit, d drop the selected (or oldest) held message, A accepts all.
        Binding("i", "intercept", "Intercept"),
        Binding("a", "hold('accept')", "Accept"),
        Binding("e", "hold('edit')", "Edit"),
        Binding("d", "hold('drop')", "Drop"),
        Binding("A", "hold('accept-all')", "Accept all"),
    ]

    def __init__(
        self,
        source: Source,
        *,
        device: str | None = None,
        filter_text: str = "",
        clock: Callable[[], int] = time.time_ns,
        poll_interval: float = 0.1,
        control: Control | None = None,
        holds: Holds | None = None,
    ) -> None:
        super().__init__()
        #: The intercept's control socket to the proxy engine, and what is held (live only).
        self.control = control
        self.holds = holds if holds is not None else Holds()
        self._holds_seen = -1
        self.source = source
        self.model = Model(source, device=device, clock=clock)
        self.initial_filter = filter_text
        self.poll_interval = poll_interval
        self.view = "messages"
        self.search_text = ""
        self._seen: tuple = ()
        self._detail_sig: tuple | None = None
        self._last_state_draw = 0.0
        self._search_cancel = threading.Event()
        self.last_saved: tuple[str, int] | None = None
        self._widgets: dict[str, object] = {}
        self.state_at_cursor = False
        self._replay: tuple[tuple, Session | None] | None = None
        self._replay_cancel = threading.Event()
        self._keep_row: int | None = None
        self._last_select = 0.0
        self._jumped_to: int | None = None
        self._detail_timer: Timer | None = None
        self.crash: str | None = None  # one line: why the app stopped on an error
        self._comment_row: int | None = None

    # -- errors: one line and a non-zero exit, not a traceback and 0 ---------------------
    def _handle_exception(self, error: Exception) -> None:
        if self.crash is None:
            self.crash = f"{type(error).__name__}: {safe_text(error)}"[:500]
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        if os.environ.get("VUINSPECT_TRACEBACK"):
            super()._fatal_error()
            return
        self.bell()
        self._close_messages_no_wait()

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        with ContentSwitcher(initial="messages", id="views"):
            with Vertical(id="messages"):
                yield FilterBar(id="filter-bar")
                yield ColumnHeader()
                yield MessageList(self.model, id="list")
                with Horizontal(id="lower"):
                    yield DetailTree(id="detail")
                    yield HexView(id="hex")
            yield StateView(id="state")
            yield ConnectionsView(id="connections")
            yield StatsView(id="stats")
            with Vertical(id="queues"):
                yield Static("", id="queues-hint")
                yield QueuesView(id="queues-table")
                yield Static("", id="queues-line")
        yield PromptBar(id="prompt-bar")
        yield Footer()

    @property
    def message_list(self) -> MessageList:
        return self._widgets["list"]  # type: ignore[return-value]  # on_mount: the MessageList

    @property
    def detail(self) -> DetailTree:
        return self._widgets["detail"]  # type: ignore[return-value]  # on_mount: the DetailTree

    @property
    def hex(self) -> HexView:
        return self._widgets["hex"]  # type: ignore[return-value]  # on_mount: the HexView

    def on_mount(self) -> None:
        # Kept, not queried: timers may still fire while the screen is torn down.
        self._widgets = {
            "list": self.query_one(MessageList),
            "detail": self.query_one(DetailTree),
            "hex": self.query_one(HexView),
            "title": self.query_one("#title", Static),
        }
        self._fit_hex(self.size.width)
        lst = self.message_list
        lst.focus()
        if self.initial_filter:
            bar = self.query_one(FilterBar)
            bar.input.value = self.initial_filter
            bar.applied = self.initial_filter.strip()
            self.model.set_filter(self.initial_filter)
        self.model.start()
        self.set_interval(self.poll_interval, self.poll)
        self.poll()

    async def action_quit_now(self) -> None:
        """Esc then q typed fast (alt+q): quit, even from an input (Esc meant: leave it)."""
        await self.action_quit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While an input has focus the app's commands are off (and out of the footer)."""
        if action in _COMMANDS and isinstance(self.focused, Input):
            return False
        if action == "intercept":
            return self.control is not None
        if action == "hold":
            return self.control is not None and len(self.holds) > 0
        return True

    def on_resize(self, event: events.Resize) -> None:
        self._fit_hex(event.size.width)
        if self._widgets:
            self._update_title(event.size.width)  # its parts are shortened to fit

    def _fit_hex(self, width: int) -> None:
        if not self._widgets:
            return
        hexview = self.hex
        narrow = narrow_for(width)
        if narrow != hexview.has_class("-narrow"):
            hexview.set_class(narrow, "-narrow")
            hexview.show(hexview.data, hexview.highlight)

    def on_unmount(self) -> None:
        self._search_cancel.set()
        self._replay_cancel.set()
        self.model.stop()

    # -- following the model -------------------------------------------------------------
    def poll(self) -> None:
        """Repaint what the decoding thread changed since the last poll."""
        if self._exit or not self._widgets or not self.message_list.is_attached:
            return  # leaving: the timer may fire while the widgets are being removed
        if self.holds.changed != self._holds_seen:
            self._holds_seen = self.holds.changed
            self.message_list.held = dict(self.holds.rows)
            self.message_list.model_changed(rows_changed=False)
            self.refresh_bindings()
        m = self.model
        seen = (
            len(m.source),
            m.decoded,
            len(m),
            m.generation,
            m.finished,
            m.filtered,
            m.source.loading,
        )
        if seen != self._seen:
            self._seen = seen
            self.message_list.model_changed()
            if self._keep_row is not None and not m.filtering:
                self._restore_row()
            self._refresh_detail()
            self._update_title()
            self._refresh_view(force=True)
        elif m.source.live and not m.source.ended:
            self._refresh_view(force=False)  # ages keep growing

    def _update_title(self, width: int | None = None) -> None:
        """Redraw the title for ``width`` columns (the app's; a resize tells the new one
        before the app's size is updated)."""
        lst = self.message_list
        t = title_text(
            self.model,
            self.view,
            follow=lst.follow,
            marks=len(lst.marks),
            width=(width or self.size.width) - TITLE_PADDING,
        )
        self._widgets["title"].update(t)  # type: ignore[attr-defined]  # on_mount: a Static

    def _refresh_view(self, force: bool) -> None:
        if self.view == "messages":
            return
        now = time.monotonic()
        if not force and now - self._last_state_draw < 1.0:
            return
        if force and now - self._last_state_draw < 0.25 and not self.model.finished:
            return  # while a big capture decodes, redraw the tables four times a second
        self._last_state_draw = now
        self.refresh_view()

    def refresh_view(self) -> None:
        """Redraw the current non-list view from the sessions now."""
        sessions = self.model.sessions()
        now_ns = self.model.now_ns()
        lock = self.model.lock
        kinds: dict[str, type[Widget]] = {
            "state": StateView,
            "connections": ConnectionsView,
            "stats": StatsView,
            "queues": QueuesView,
        }
        kind = kinds.get(self.view)
        if kind is None or not self.query(kind):
            return  # the list, or the view is being removed as the app exits
        if self.view == "state":
            self._refresh_state(sessions, now_ns, lock)
        elif self.view == "connections":
            self.query_one(ConnectionsView).update_sessions(
                sessions, now_ns, lock, self.model.ranking
            )
        elif self.view == "stats":
            self.query_one(StatsView).update_stats(sessions, lock)
        elif self.view == "queues":
            self.query_one(QueuesView).update_queues(sessions, self.model.rings, now_ns, lock)

    def _refresh_state(
        self, sessions: list[Session], now_ns: int, lock: AbstractContextManager[Any]
    ) -> None:
        view = self.query_one(StateView)
        row = self.message_list.selected_row
        if not self.state_at_cursor or row is None:
            decoded = self.model.decoded
            heading = Text(f"State now, after frame {decoded:,}", style="bold reverse")
            heading.append("   a: state at the selected frame", style="dim")
            view.update_state(sessions, now_ns, lock, heading=heading, ranking=self.model.ranking)
            return
        conn = view.conn if view.conn is not None else self.model.frame(row).conn
        key = (conn, row, self.model.decoded if self.source.live else 0)
        frame = self.model.frame(row)
        heading = Text(
            f"State at frame {row + 1} ({format_time(frame.ts_ns, 'abs', None, None)} UTC)",
            style="bold reverse",
        )
        heading.append("   a: state now", style="dim")
        if self._replay is not None and self._replay[0] == key:
            view.update_state(
                sessions,
                now_ns,
                lock,
                heading=heading,
                replay=self._replay[1],
                replay_now_ns=frame.ts_ns,
                ranking=self.model.ranking,
            )
            return
        heading.append("   replaying…", style="yellow")
        view.update_state(sessions, now_ns, lock, heading=heading, ranking=self.model.ranking)
        self._replay_cancel.set()
        self._replay_cancel = threading.Event()
        self._replay_worker(key, conn, row, self._replay_cancel)

    @work(thread=True, exclusive=True, group="replay")
    def _replay_worker(self, key: tuple, conn: int, row: int, cancel: threading.Event) -> None:
        session = self.model.state_at(conn, row, cancel)
        if not cancel.is_set():
            self.call_from_thread(self._replay_done, key, session)

    def _replay_done(self, key: tuple, session: Session | None) -> None:
        self._replay = (key, session)
        if self.view == "state":
            self.refresh_view()

    def on_state_view_toggle_at_cursor(self, event: StateView.ToggleAtCursor) -> None:
        self.state_at_cursor = not self.state_at_cursor
        self.refresh_view()

    # -- selection, detail and hex -------------------------------------------------------
    def _row_sig(self, row: int | None) -> tuple:
        m = self.model
        if row is None:
            return (None,)
        if not m.is_decoded(row):
            return (row, False)
        return (row, True, m.bits[row], m.link[row], len(m.odd.get(row, ())), m.comments.get(row))

    def on_message_list_follow_changed(self, event: MessageList.FollowChanged) -> None:
        if self._widgets:
            self._update_title()  # "paused" at once, even when no frame comes

    def on_message_list_selected(self, event: MessageList.Selected) -> None:
        # While the cursor races (a held key, page after page) only the list repaints;
        # the tree and hex follow once it rests, as in termshark.
        now = time.monotonic()
        quick = now - self._last_select < DETAIL_DELAY and event.row != self._jumped_to
        self._last_select = now
        self._jumped_to = None
        if self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None
        if quick:
            self._detail_timer = self.set_timer(DETAIL_DELAY, self._refresh_detail)
        else:
            self._refresh_detail(event.row)

    def _refresh_detail(self, row: int | None = -1) -> None:
        self._detail_timer = None
        if row == -1:
            row = self.message_list.selected_row
        sig = self._row_sig(row)
        if sig == self._detail_sig:
            return
        self._detail_sig = sig
        tree = self.detail
        if row is None:
            tree.show([], "No message")
            self.hex.show(b"")
            return
        msgs = self.model.messages(row)
        frame = self.model.frame(row)
        title = f"Frame {row + 1}: conn {frame.conn} {frame.channel} {frame.direction}"
        tree.show(msgs, title, self.model.comment(row))
        ref = tree.current
        if not msgs:
            self.hex.show(frame.data)
        elif ref is None or ref.part >= len(msgs):
            self.hex.show(msgs[0].raw)
        else:
            self._show_field(ref.part, ref.key)

    def _show_field(self, part: int, key: str) -> None:
        msg = self.detail.msgs[part]
        self.hex.show(msg.raw, range_for(field_ranges(msg), key))

    def on_detail_tree_field_highlighted(self, event: DetailTree.FieldHighlighted) -> None:
        msgs = self.detail.msgs
        if not msgs or event.part >= len(msgs):
            return
        self._show_field(event.part, event.key)

    def on_detail_tree_jump_requested(self, event: DetailTree.JumpRequested) -> None:
        self.jump_to_frame(event.frame)

    def jump_to_frame(self, number: int) -> bool:
        row = self.model.row_of_frame(number)
        if row is None:
            self.notify(f"no frame {number}", severity="warning")
            return False
        self._jumped_to = row  # an explicit jump: the detail pane follows at once
        if not self.message_list.show_row(row):
            self.notify(f"frame {number} is hidden by the filter", severity="warning")
            return False
        return True

    # -- actions: views --------------------------------------------------------------------
    def action_view(self, view: str, conn: int | None = None) -> None:
        """Show ``view``; the State view opens on ``conn``, else the selected row's."""
        if view not in VIEWS:
            return
        if view == "state":
            row = self.message_list.selected_row
            if conn is None and row is not None:
                conn = self.model.frame(row).conn
            if conn is not None:
                self.query_one(StateView).conn = conn
        self.view = view
        self.query_one(ContentSwitcher).current = view
        self._update_title()
        if view == "messages":
            self.message_list.focus()
        else:
            self.refresh_view()
            self._last_state_draw = time.monotonic()
            target = {
                "state": "#state-conns",
                "connections": "#connections",
                "stats": "#stats",
                "queues": "#queues-table",
            }[view]
            self.query_one(target).focus()

    def on_state_view_chosen(self, event: StateView.Chosen) -> None:
        self.refresh_view()

    def on_connections_view_open_state(self, event: ConnectionsView.OpenState) -> None:
        self.action_view("state", event.conn)  # (not the selected row's connection)

    def on_connections_view_filter_conn(self, event: ConnectionsView.FilterConn) -> None:
        self.apply_filter(f"conn == {event.conn}")
        self.action_view("messages")

    def on_stats_view_filter_request(self, event: StatsView.FilterRequest) -> None:
        self.apply_filter(f"name == {event.name} and channel == {event.channel}")
        self.action_view("messages")

    def on_queues_view_open_chains(self, event: QueuesView.OpenChains) -> None:
        row = self.model.rings.last_row(event.conn, event.vring)
        msg = self.model.message(row) if row is not None else None
        payload = msg.payload if msg is not None and msg.kind == "ring" else None
        body = chains_text(event.conn, event.vring, None if row is None else row + 1, payload)
        self.push_screen(ChainsScreen(f"c{event.conn} vring {event.vring}: in-flight chains", body))

    def action_toggle_rings(self) -> None:
        """Every ring/notify frame in the list, or only those raising or resolving a problem."""
        show = not self.model.show_rings
        self._keep_row = self.message_list.selected_row
        self.model.set_show_rings(show)
        self.notify(
            "ring/notify frames: all shown"
            if show
            else "ring/notify frames: only those with a problem (R shows all)",
            timeout=2,
        )
        self.poll()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- filter ------------------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        self.action_view("messages")
        self.query_one(FilterBar).input.focus()

    def apply_filter(self, text: str) -> None:
        bar = self.query_one(FilterBar)
        bar.input.value = text
        bar.applied = text.strip()
        self._keep_row = self.message_list.selected_row
        self.model.set_filter(text)
        self.poll()

    def on_filter_bar_applied(self, event: FilterBar.Applied) -> None:
        self._keep_row = self.message_list.selected_row
        self.model.set_filter(event.text)
        self.message_list.focus()
        self.poll()

    def _restore_row(self) -> None:
        """After a filter change: stay on the same frame, or the nearest one shown."""
        row, self._keep_row = self._keep_row, None
        if row is not None and len(self.model):
            pos = self.model.nearest_position(row)
            self._jumped_to = self.model.row_at(pos)
            self.message_list.cursor = pos

    def on_filter_input_leave(self, event: FilterInput.Leave) -> None:
        bar = self.query_one(FilterBar)
        bar.input.value = bar.applied
        self.message_list.focus()

    # -- intercept: the engine holds, the TUI decides (intercept.py, holds.py) -----------------
    def action_intercept(self) -> None:
        intercept.open_prompt(self)

    def action_hold(self, how: str) -> None:
        intercept.decide(self, how)

    def on_key(self, event: object) -> None:
        # Enter on the list moves into the tree, like termshark's pane hopping.
        key = getattr(event, "key", "")
        if key == "enter" and self.focused is self.message_list:
            self.detail.focus()

    # -- command palette ---------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)


# The app's key commands: off while an input has focus (see check_action).
_COMMANDS = frozenset(
    b.action.partition("(")[0]
    for b in VuInspectApp.BINDINGS
    if isinstance(b, Binding) and b.action != "quit_now"
)
