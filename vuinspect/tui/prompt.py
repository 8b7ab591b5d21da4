"""The one-line prompt (search, go to frame, save, comment): a label, then the input.

It sits in the layout above the docked footer, never under it, and shows its
question as a label so a pre-filled value (the default save path) is seen
with it.  Tab stays in the input and losing focus closes the prompt, so typed
keys never run as commands.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message as TMessage
from textual.widgets import Input, Static

from vuinspect.render import safe_text


class PromptInput(Input):
    """The input of the prompt line (Esc cancels)."""

    BINDINGS = [
        Binding("enter", "submit", "Accept"),
        Binding("escape", "cancel", "Cancel"),
        Binding("tab,shift+tab", "stay", show=False),
    ]

    def _close_bar(self) -> None:
        if isinstance(self.parent, PromptBar):
            self.parent.close()

    def action_cancel(self) -> None:
        self._close_bar()

    def action_stay(self) -> None:
        pass

    def on_blur(self) -> None:
        self._close_bar()


class PromptBar(Horizontal):
    """Label + input; posts :class:`PromptBar.Answered` with the mode it was opened in."""

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

    def compose(self) -> ComposeResult:
        yield Static("", id="prompt-label", markup=False)
        yield PromptInput(id="prompt", select_on_focus=False)

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
        prompt.placeholder = placeholder
        prompt.value = value
        prompt.cursor_position = len(value)
        self.add_class("-active")
        prompt.focus()

    def close(self) -> None:
        if self.mode is None:
            return
        self.mode = None
        self.remove_class("-active")
        self.post_message(self.Closed())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode, text = self.mode, event.value.strip()
        self.close()
        if mode is not None:
            self.post_message(self.Answered(mode, text))
