"""Per-connection protocol state: features (offered vs acked), memory, vrings, who waits on whom.

What no packet tool shows: the session's negotiated state as of the newest
decoded frame, and every request still owed a reply with its age, so a hang
points at the side that owes the answer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message as TMessage
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from vuinspect.protocol import features as F
from vuinspect.render import human_size, safe_text
from vuinspect.session import Session

from .ages import format_age
from .connections import Paged, window
from .ranking import Ranking
from .rowtext import format_time


def _hex(v: int | None) -> str:
    return "-" if v is None else f"0x{v:x}"


def _cells(*values: object) -> list[Text]:
    """Table cells as Text: escaped, and never read as Rich markup (fd texts come from peers)."""
    return [Text(safe_text(v)) for v in values]


def _table(title: str, *cols: str) -> Table:
    t = Table(
        title=title or None,
        title_justify="left",
        title_style="bold",
        expand=False,
        show_edge=False,
        pad_edge=False,
        header_style="bold dim",
    )
    for c in cols:
        t.add_column(c, no_wrap=True)
    return t


def feature_table(
    title: str, offered: int | None, acked: int | None, table: dict[int, str]
) -> RenderableType:
    """One row per bit offered or acked: who offered it, whether the front-end took it."""
    if offered is None and acked is None:
        return Text(f"{title}: not negotiated yet", style="dim")
    head = Text(title, style="bold")
    head.append(
        f"   offered by the back-end {_hex(offered)}, acked by the front-end {_hex(acked)}",
        style="dim",
    )
    t = _table("", "bit", "name", "offered", "acked")
    bits = (offered or 0) | (acked or 0)
    for bit in range(64):
        if not bits >> bit & 1:
            continue
        off = offered is not None and bool(offered >> bit & 1)
        ack = acked is not None and bool(acked >> bit & 1)
        style = "red" if ack and offered is not None and not off else ("" if ack else "dim")
        t.add_row(
            str(bit),
            table.get(bit, f"BIT_{bit}"),
            "yes" if off else ("?" if offered is None else "no"),
            "yes" if ack else ("?" if acked is None else "no"),
            style=style,
        )
    return Group(head, t)


def waiting_table(session: Session, now_ns: int) -> RenderableType:
    waiting = session.waiting()
    if not waiting:
        return Text("Waiting: nothing: no request is owed a reply", style="green")
    t = _table(
        "Waiting: requests still owed a reply (who waits on whom)",
        "frame",
        "request",
        "waiter",
        "owes the reply",
        "age",
        "",
    )
    for p in waiting:
        m = p.message
        closed = session.closed_ns is not None
        end_ns = session.closed_ns if session.closed_ns is not None else now_ns
        age = format_age(max(0, end_ns - p.since_ns))
        note = (
            "never answered (closed)"
            if closed
            else ("reply required" if p.expected else "reply optional")
        )
        t.add_row(
            *_cells(m.frame, m.name, p.waiter, p.owner, age, note),
            style="bold red" if p.expected and not closed else "yellow",
        )
    return t


def ring_waiting_table(session: Session, now_ns: int) -> list[RenderableType]:
    """Active data-plane findings: requests in flight on a vring that nobody moves."""
    rows = [
        f
        for i in sorted(session.dataplane.rings)
        for f in session.dataplane.rings[i].active.values()
    ]
    if not rows:
        return []
    # lines, not a table: they wrap instead of being cut in a narrow state pane
    t = Text("Waiting: vrings with requests in flight (5: Queues)\n", style="bold")
    end_ns = session.closed_ns if session.closed_ns is not None else now_ns
    for f in rows:
        t.append(
            safe_text(
                f"  vring {f.vring}  {f.code}  {f.in_flight} in flight  since "
                f"{format_time(f.since_ns, 'abs', None, None)} UTC "
                f"({format_age(max(0, end_ns - f.since_ns))})"
            )
            + "\n",
            style="bold red",
        )
    t.rstrip()
    return [t]


def session_renderable(session: Session, now_ns: int) -> RenderableType:
    """Everything the state view shows for one session."""
    s = session
    head = Text()
    head.append(safe_text(f"Connection {s.conn}: {s.label}") + "\n", style="bold")
    info = s.info
    head.append(
        safe_text(
            f"device {s.device or '?'}   orientation {info.get('orientation', '?')}   "
            f"listen {info.get('listen', '-')}   connect {info.get('connect', '-')}"
        )
        + "\n"
    )
    start = s.started_ns
    if start is not None:
        head.append(f"opened {format_time(start, 'abs', None, None)} UTC")
    if s.closed_ns is not None:
        head.append(
            f"   closed {format_time(s.closed_ns, 'abs', None, None)} UTC: "
            + safe_text(s.close_reason),
            style="yellow",
        )
    else:
        head.append("   open", style="green")
    dp = s.dataplane.problem_count  # ring/notify messages' problems: not in s.problem_count
    problems = f"{s.problem_count + dp}" + (f" ({dp} data plane)" if dp else "")
    head.append(
        f"\nmessages {s.messages}   problems {problems}   owner {'yes' if s.owner else 'no'}"
        f"   queues {s.queue_num if s.queue_num is not None else '-'}"
        f"   mem slots {s.max_mem_slots if s.max_mem_slots is not None else '-'}"
    )
    if s.status is not None:
        names = " ".join(F.bit_names(s.status & 0xFF, F.STATUS_TABLE))
        head.append(f"   status 0x{s.status:x} [{names}]")
    if s.mtu is not None:
        head.append(f"   mtu {s.mtu}")
    parts: list[RenderableType] = [
        head,
        waiting_table(s, now_ns),
        *ring_waiting_table(s, now_ns),
        Text(""),
    ]
    parts.append(
        feature_table("Virtio features", s.virtio_offered, s.virtio_acked, F.virtio_table(s.device))
    )
    parts.append(Text(""))
    parts.append(
        feature_table("Protocol features", s.protocol_offered, s.protocol_acked, F.PROTOCOL_TABLE)
    )
    parts.append(Text(""))
    if s.regions:
        t = _table(
            f"Memory table ({len(s.regions)} regions, "
            f"{human_size(sum(r.memory_size for r in s.regions))})",
            "#",
            "guest phys",
            "size",
            "userspace",
            "mmap offset",
            "fd",
        )
        for i, r in enumerate(s.regions):
            t.add_row(
                *_cells(
                    i,
                    _hex(r.guest_phys_addr),
                    human_size(r.memory_size),
                    _hex(r.userspace_addr),
                    _hex(r.mmap_offset),
                    r.fd or "-",
                )
            )
        parts.append(t)
    else:
        parts.append(Text("Memory table: none yet", style="dim"))
    parts.append(Text(""))
    if s.vrings:
        t = _table(
            "Vrings",
            "#",
            "num",
            "base",
            "desc",
            "avail",
            "used",
            "kick",
            "call",
            "err",
            "enabled",
            "started",
            "last base",
        )
        for idx in sorted(s.vrings):
            v = s.vrings[idx]
            t.add_row(
                *_cells(
                    idx,
                    "-" if v.num is None else v.num,
                    "-" if v.base is None else v.base,
                    _hex(v.desc),
                    _hex(v.avail),
                    _hex(v.used),
                    v.kick or "-",
                    v.call or "-",
                    v.err or "-",
                    {True: "yes", False: "no", None: "-"}[v.enabled],
                    "yes" if v.started else "no",
                    "-" if v.stopped_base is None else v.stopped_base,
                )
            )
        parts.append(t)
    else:
        parts.append(Text("Vrings: none set up yet", style="dim"))
    parts.append(Text(""))
    backend = Text("Back-end channel: ", style="bold")
    backend.append(s.backend_channel, style="green" if s.backend_channel == "established" else "")
    if s.backend_fd:
        backend.append(safe_text(f"   fd {s.backend_fd}"))
    parts.append(backend)
    if s.log:
        parts.append(
            Text(
                safe_text(
                    f"Dirty log: size {human_size(s.log.get('mmap_size', 0))} "
                    f"offset {_hex(s.log.get('mmap_offset'))} fd {s.log.get('fd') or '-'}"
                )
            )
        )
    if s.inflight:
        parts.append(Text(safe_text(f"Inflight: {s.inflight}")))
    return Group(*parts)


class StateView(Paged, Horizontal):
    """A connection chooser and the chosen connection's state.

    Past ``WINDOW`` connections the chooser lists a page of them (waiting, with problems,
    open ones on top) holding the chosen one (``2`` from a message's row); ``[`` ``]`` page.
    """

    DEFAULT_CSS = """
    StateView > OptionList { width: 32; }
    StateView > VerticalScroll { width: 1fr; padding: 0 1; }
    """

    BINDINGS = [
        Binding("a", "toggle_at_cursor", "At cursor / latest"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
    ]

    class ToggleAtCursor(TMessage):
        """Switch between the state now and the state at the selected frame."""

    class Chosen(TMessage):
        def __init__(self, conn: int) -> None:
            super().__init__()
            self.conn = conn

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.conn: int | None = None
        self._items: list[tuple[str, str]] = []  # (option id, label) listed now

    def compose(self) -> ComposeResult:
        yield OptionList(id="state-conns")
        with VerticalScroll(id="state-scroll"):
            yield Static("No connection yet", id="state-body")

    def update_state(
        self,
        sessions: list[Session],
        now_ns: int,
        lock: AbstractContextManager[Any],
        *,
        heading: Text | None = None,
        replay: Session | None = None,
        replay_now_ns: int = 0,
        ranking: Ranking | None = None,
    ) -> None:
        """Redraw from the sessions (read under ``lock``, the model's).

        ``replay`` is the chosen connection's session as it was at an earlier
        frame (state at the cursor); the connection list stays the live one.
        ``ranking``: the model's order of ``sessions`` (see ``connections.window``).
        """
        paged, self._paged = self._paged, False
        with lock:
            win = window(sessions, self._start, None if paged else self.conn, ranking)
            if (self.conn is None or paged) and win.sessions:
                self.conn = win.sessions[0].conn
            up, down = win.more_lines()
            items = [("up", up)] if up else []
            items += [
                (
                    str(s.conn),
                    safe_text(f"c{s.conn} {s.label}")
                    + (" (closed)" if s.closed_ns is not None else "")
                    + (" ⏳" if s.closed_ns is None and s.owed() else ""),
                )
                for s in win.sessions
            ]
            items += [("down", down)] if down else []
            chosen = next((s for s in win.sessions if s.conn == self.conn), None)
            if chosen is None and self.conn is not None:
                chosen = next((s for s in sessions if s.conn == self.conn), None)
            if replay is not None and replay.conn == self.conn:
                body = session_renderable(replay, replay_now_ns)
            else:
                body = session_renderable(chosen, now_ns) if chosen else Text("No connection yet")
        self._start, self._after = win.start, win.after
        if heading is not None:
            body = Group(heading, body)
        found = self.query(OptionList)
        if not found:
            return  # not composed yet, or being removed as the app exits
        options = found.first()
        if items != self._items:
            highlighted = options.highlighted
            options.clear_options()
            options.add_options(
                [
                    Option(Text(label, style="" if key.isdigit() else "dim"), id=key)
                    for key, label in items
                ]
            )
            self._items = items
            ids = [key for key, _ in items]
            if str(self.conn) in ids:
                options.highlighted = ids.index(str(self.conn))
            elif highlighted is not None and ids:
                options.highlighted = min(highlighted, len(ids) - 1)
        self.query_one("#state-body", Static).update(body)
        if paged and self.conn is not None:
            self.post_message(self.Chosen(self.conn))  # the app replays it if "a" is on

    def action_toggle_at_cursor(self) -> None:
        self.post_message(self.ToggleAtCursor())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id in ("up", "down"):  # Enter on a "… more" line pages
            self.action_page(-1 if event.option.id == "up" else 1)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is None or not event.option.id.isdigit():
            return
        conn = int(event.option.id)
        if conn != self.conn:
            self.conn = conn
            self.post_message(self.Chosen(conn))
