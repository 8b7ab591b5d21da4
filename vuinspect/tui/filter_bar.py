"""The display-filter bar: ``vuinspect read --filter``'s language with live validity colouring.

As in Wireshark and termshark the bar turns green while the text compiles and
red (with the error and a caret under the offending character) when it does
not; Enter applies it, Escape goes back to the list.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message as TMessage
from textual.widgets import Input, Static

from vuinspect.filter import FilterError, compile_filter

PLACEHOLDER = "filter: e.g. name == SET_MEM_TABLE and conn == 2, problems, latency_us > 100"


def check(text: str) -> FilterError | None:
    """None when ``text`` compiles (an empty filter is valid)."""
    try:
        compile_filter(text)
    except FilterError as exc:
        return exc
    return None


class FilterInput(Input):
    BINDINGS = [Binding("escape", "leave", "Back to list", show=False)]

    class Leave(TMessage):
        pass

    def action_leave(self) -> None:
        self.post_message(self.Leave())


class FilterBar(Vertical):
    """Input plus a status line (error with caret, or what the filter is doing)."""

    DEFAULT_CSS = """
    FilterBar { height: auto; }
    FilterBar > Input { border: none; height: 1; padding: 0 1; }
    FilterBar > #filter-status { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    FilterBar.-invalid > Input { background: $error 30%; }
    FilterBar.-valid.-changed > Input { background: $success 20%; }
    """

    class Applied(TMessage):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.applied = ""
        self.error: FilterError | None = None

    def compose(self):  # type: ignore[override]
        yield FilterInput(placeholder=PLACEHOLDER, id="filter-input")
        status = Static("", id="filter-status")
        status.display = False
        yield status

    @property
    def input(self) -> Input:
        return self.query_one(FilterInput)

    def set_status(self, text: str | Text) -> None:
        status = self.query_one("#filter-status", Static)
        status.update(text)
        status.display = bool(str(text))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.error = check(event.value)
        self.set_class(self.error is not None, "-invalid")
        self.set_class(self.error is None, "-valid")
        self.set_class(event.value.strip() != self.applied, "-changed")
        if self.error is not None:
            msg = Text(" " * self.error.position + "^ ", style="bold red")
            msg.append(self.error.message, style="red")
            self.set_status(msg)
        elif event.value.strip() != self.applied:
            self.set_status(Text("valid filter: Enter applies it, Escape keeps the old one",
                                 style="green"))
        else:
            self.set_status("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.error is not None:
            self.app.bell()
            return
        self.applied = event.value.strip()
        self.remove_class("-changed")
        self.post_message(self.Applied(self.applied))
