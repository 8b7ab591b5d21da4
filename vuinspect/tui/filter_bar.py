"""The display-filter bar: ``vuinspect read --filter``'s language with live validity colouring.

As in Wireshark and termshark the bar turns green while the text compiles and
red (with the error and a caret under the offending character) when it does
not; Enter applies it, Escape goes back to the list.  Field names and their
values (request names, problem codes) complete as you type: the greyed
suggestion and Tab accept it, and the status line lists the other choices.
Tab never leaves the bar, so what you type never runs as a command.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message as TMessage
from textual.suggester import Suggester
from textual.widgets import Input, Static

from vuinspect.filter import FilterError, compile_filter

from .complete import candidates, complete

PLACEHOLDER = "filter: e.g. name == SET_MEM_TABLE and conn == 2, problems, latency_us > 100"


def check(text: str) -> FilterError | None:
    """None when ``text`` compiles (an empty filter is valid)."""
    try:
        compile_filter(text)
    except FilterError as exc:
        return exc
    except RecursionError:
        return FilterError("filter too deep", 0)
    return None


class FilterSuggester(Suggester):
    """Inline completion of the word being typed (shown greyed, Tab or → accepts)."""

    def __init__(self) -> None:
        super().__init__(use_cache=True, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        word, found = candidates(value)
        return value + found[0][len(word) :] if word and found else None


class FilterInput(Input):
    BINDINGS = [
        Binding("enter", "submit", "Apply"),
        Binding("tab", "complete", "Complete"),
        Binding("shift+tab", "complete", "Complete", show=False),
        Binding("escape", "leave", "Back to list"),
    ]

    class Leave(TMessage):
        pass

    class Choices(TMessage):
        def __init__(self, names: list[str]) -> None:
            super().__init__()
            self.names = names

    def action_leave(self) -> None:
        self.post_message(self.Leave())

    def action_complete(self) -> None:
        """Complete the word at the end (as far as the choices agree); list the rest."""
        if self.cursor_position != len(self.value):
            self.cursor_position = len(self.value)
            return
        text, found = complete(self.value)
        if text != self.value:
            self.value = text
            self.cursor_position = len(text)
        self.post_message(self.Choices(found))


class FilterBar(Vertical):
    """Input plus a status line (error with caret, choices, or what the filter is doing)."""

    DEFAULT_CSS = """
    FilterBar { height: auto; }
    FilterBar > Input, FilterBar > Input:focus { border: none; height: 1; padding: 0 1; }
    FilterBar > Input:focus { background: $boost; }
    FilterBar > #filter-status { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    FilterBar.-invalid > Input, FilterBar.-invalid > Input:focus { background: $error 30%; }
    FilterBar.-valid.-changed > Input { background: $success 20%; }
    """

    class Applied(TMessage):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.applied = ""
        self.error: FilterError | None = None

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder=PLACEHOLDER, id="filter-input", suggester=FilterSuggester())
        status = Static("", id="filter-status", markup=False)
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
        self._show_state(event.value)

    def _show_state(self, value: str, choices: list[str] | None = None) -> None:
        if self.error is not None:
            # one line each (never wrapped, so the caret stays under its character)
            msg = Text(
                " " * min(self.error.position, 200) + "^ ",
                style="bold red",
                no_wrap=True,
                overflow="ellipsis",
            )
            msg.append(self.error.message, style="red")
            word, found = candidates(value)
            if found and word:
                msg.append("\nTab: " + " ".join(found[:12]), style="dim")
            self.set_status(msg)
        elif choices:
            self.set_status(
                Text(
                    "Tab: " + " ".join(choices[:12]) + (" …" if len(choices) > 12 else ""),
                    style="cyan",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
        elif value.strip() != self.applied:
            self.set_status(
                Text("valid filter: Enter applies it, Escape keeps the old one", style="green")
            )
        else:
            self.set_status("")

    def on_filter_input_choices(self, event: FilterInput.Choices) -> None:
        event.stop()
        self._show_state(self.input.value, event.names)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.error is not None:
            self.app.bell()
            return
        self.applied = event.value.strip()
        self.remove_class("-changed")
        self.post_message(self.Applied(self.applied))
