"""The one-line prompt (search, go to frame, save, comment): a label, then the input.

It sits in the layout above the docked footer, never under it, and shows its
question as a label so a pre-filled value (the default save path) is seen
with it.  Tab stays in the input and losing focus closes the prompt, so typed
keys never run as commands.

The search prompt works as in less and vim: it opens empty with the earlier
searches one ↑ away (typing never appends to the last one), Enter on the empty
field repeats the last search, and a text shaped like a filter that does not
compile is refused with the filter bar's error and suggestion, the way ``f``
refuses it, instead of being looked up as words.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message as TMessage
from textual.widgets import Input, Static

from vuinspect.render import safe_text

from .filter_bar import check
from .search import filter_shaped

#: Modes whose offered value is the last answer: kept in a history, not pre-filled.
RECALLED = frozenset({"search"})
HISTORY = 50  # answers kept per mode


class PromptInput(Input):
    """The input of the prompt line (Esc cancels)."""

    BINDINGS = [
        Binding("enter", "submit", "Accept"),
        Binding("escape", "cancel", "Cancel"),
        Binding("tab,shift+tab", "stay", show=False),
        Binding("up", "recall(-1)", "Earlier", show=False),
        Binding("down", "recall(1)", "Later", show=False),
    ]

    @property
    def bar(self) -> PromptBar | None:
        return next((a for a in self.ancestors if isinstance(a, PromptBar)), None)

    def _close_bar(self) -> None:
        if (bar := self.bar) is not None:
            bar.close()

    def action_cancel(self) -> None:
        self._close_bar()

    def action_stay(self) -> None:
        pass

    def action_recall(self, step: int) -> None:
        if (bar := self.bar) is not None:
            bar.recall(step)

    def on_blur(self) -> None:
        self._close_bar()


class PromptBar(Vertical):
    """Label + input (and, above them, why an answer was refused); posts
    :class:`PromptBar.Answered` with the mode it was opened in."""

    class Answered(TMessage):
        def __init__(self, mode: str, text: str) -> None:
            super().__init__()
            self.mode = mode
            self.text = text

    class Closed(TMessage):
        """The prompt went away (answered, cancelled or left)."""

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.mode: str | None = None
        self.history: dict[str, list[str]] = {}
        self._recalled = 0  # position in the open mode's history (len: the typed text)
        self._draft = ""  # what was typed before ↑

    def compose(self) -> ComposeResult:
        status = Static("", id="prompt-status", markup=False)
        status.display = False
        yield status
        with Horizontal(id="prompt-row"):
            yield Static("", id="prompt-label", markup=False)
            yield PromptInput(id="prompt", select_on_focus=False)

    def refuse(self, why: str) -> None:
        """Keep the prompt open, its text red, ``why`` shown above it (until an edit)."""
        status = self.query_one("#prompt-status", Static)
        status.update(why)
        status.display = bool(why)
        self.set_class(bool(why), "-invalid")

    def open(
        self,
        mode: str,
        label: str,
        value: str = "",
        placeholder: str = "Enter accepts, Esc cancels",
    ) -> None:
        prompt = self.query_one(PromptInput)
        # A pre-filled value may come from the capture (a frame's comment): escaped, as
        # everywhere, since an Input draws ESC sequences raw.
        value = safe_text(value)
        self.mode = mode
        self.query_one("#prompt-label", Static).update(label + " ")
        if mode in RECALLED:
            history = self._remember(mode, value)
            value, self._recalled, self._draft = "", len(history), ""
            if history:
                placeholder = f"↑ or Enter: {history[-1]} · {placeholder}"
        self.refuse("")
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.cursor_position = len(value)
        self.add_class("-active")
        prompt.focus()

    def _remember(self, mode: str, text: str) -> list[str]:
        """``mode``'s history with ``text`` as its newest entry (bounded)."""
        history = self.history.setdefault(mode, [])
        if text:
            if text in history:
                history.remove(text)
            history.append(text)
            del history[:-HISTORY]
        return history

    def recall(self, step: int) -> None:
        """Show an earlier (``step`` -1) or later (+1) answer of the open mode (↑ ↓)."""
        history = self.history.get(self.mode or "", [])
        prompt = self.query_one(PromptInput)
        if self.mode not in RECALLED or not history:
            return
        if self._recalled == len(history):
            self._draft = prompt.value
        self._recalled = max(0, min(len(history), self._recalled + step))
        text = history[self._recalled] if self._recalled < len(history) else self._draft
        prompt.value = text
        prompt.cursor_position = len(text)

    def close(self) -> None:
        if self.mode is None:
            return
        self.mode = None
        self.remove_class("-active")
        self.post_message(self.Closed())

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.has_class("-invalid"):
            self.refuse("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode, text = self.mode, event.value.strip()
        if mode in RECALLED:
            history = self.history.get(mode or "", [])
            if not text and history:
                text = history[-1]  # Enter on the empty field: again, as in less and vim
            if mode == "search" and filter_shaped(text) and (error := check(text)):
                self.app.bell()
                self.refuse(f"filter: {error.message}")
                return
            self._remember(mode or "", text)
        self.close()
        if mode is not None:
            self.post_message(self.Answered(mode, text))
