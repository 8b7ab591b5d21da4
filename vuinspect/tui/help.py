"""The ``?`` help screen: every key, grouped the way termshark and mitmproxy users look for them."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Views",
        (
            ("1 2 3 4 5", "messages / state / connections / statistics / queues"),
            ("Tab, shift+Tab", "next / previous pane"),
            ("ctrl+p", "command palette"),
            ("?", "this help"),
            ("q", "quit"),
        ),
    ),
    (
        "Message list",
        (
            ("j k ↑ ↓", "next / previous message"),
            ("g G Home End", "first / last message (End resumes follow mode)"),
            ("PgUp PgDn space", "page up / down"),
            ("h l ← →", "scroll sideways"),
            ("F", "follow mode on/off (live: on until you scroll up)"),
            ("R", "ring/notify frames: all / only those with a problem"),
            ("t", "time column: absolute UTC / relative to first frame / delta"),
            ("r", "jump to the paired request or reply"),
            ("Enter", "go to the detail tree"),
        ),
    ),
    (
        "Find",
        (
            ("f", "edit the display filter (Enter applies, Esc leaves)"),
            ("Tab", "in the filter: complete a field, request name or problem code"),
            ("/", "search: a filter expression, or text in the summary line"),
            ("↑ ↓", "in the search: earlier searches (Enter on an empty one: the last)"),
            ("n N", "next / previous search match"),
            (":", "jump to frame number"),
            ("m", "mark / unmark the message"),
            ("' \"", "next / previous mark"),
            ("w", "save the filtered view (or the marked frames) as a capture"),
            ("c", "comment the frame (pcapng comment, shown in the tree; w saves it)"),
        ),
    ),
    (
        "State, connections, statistics",
        (
            ("a", "state: at the selected frame (replayed) / now"),
            ("↑ ↓", "state: choose the connection"),
            ("Enter", "connections: open the connection's state"),
            ("[ ]", "state / connections: the previous / next 200 (waiting, problems, open first)"),
            ("Enter ", "queues: the in-flight chains of the vring's latest sample"),
            ("f", "connections / statistics: filter the list to that connection / request"),
        ),
    ),
    (
        "Detail and hex",
        (
            ("↑ ↓", "move between fields; the hex pane highlights the field's bytes"),
            ("Enter", "on 'Reply in/to frame N': jump there; else expand/collapse"),
        ),
    ),
    (
        "Columns",
        (
            ("→ ←", "front-end to back-end / back-end to front-end (either channel)"),
            ("(nr)", "request sets NEED_REPLY (asks for an ack)"),
            ("waiting", "request still owed a reply"),
            ("! ·", "problem (error or warning / note): details in the tree"),
            ("●", "marked"),
            ("✎", "the frame has a comment"),
            ("H, HELD #N", "the proxy holds this message (intercept)"),
        ),
    ),
    (
        "Intercept (proxy TUI)",
        (
            ("i", "hold messages matching a filter (empty: stop, release all)"),
            ("a", "accept the selected (or oldest) held message"),
            ("e", "edit its decoded fields, then send it on"),
            ("d", "drop it (its fds closed)"),
            ("A", "accept all held messages"),
        ),
    ),
)


def help_text() -> Group:
    """The groups one under the other: a heading line, then its keys.

    The heading is a line of its own (not a cell of the key column), so the key column
    stays as narrow as the widest key and the descriptions wrap in what is left.
    """
    width = max(len(k) for _, keys in KEYS for k, _ in keys)
    parts: list[Text | Table] = []
    for group, keys in KEYS:
        parts.append(Text(group, style="bold underline"))
        t = Table(show_header=False, box=None, padding=(0, 2), pad_edge=False, expand=True)
        t.add_column(style="bold cyan", no_wrap=True, width=width)
        t.add_column(ratio=1)
        for k, text in keys:
            t.add_row(k, text)
        parts.append(t)
        parts.append(Text(""))
    return Group(*parts[:-1])


HINT = "Esc or ? closes, q quits"


class HelpScreen(ModalScreen[None]):
    # q quits from here too (no input is open); Esc then q typed fast comes as alt+q.
    BINDINGS = [
        Binding("escape,question_mark", "dismiss", "Close"),
        Binding("q,alt+q", "app.quit", "Quit"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; padding: 1 2; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 100%;
                                  border: round $accent; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll() as v:
            v.border_title = "vuinspect keys"
            v.border_subtitle = HINT
            yield Static(help_text())

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
