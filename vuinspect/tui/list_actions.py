"""The message list's key actions: the prompt (search, go to, save, comment), pair, marks,
time column and follow.

A base of :class:`~vuinspect.tui.app.VuInspectApp` so the app module keeps the layout,
the polling of the model and the views; the searching and saving themselves run off
the UI thread in search.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual import work
from textual.app import App

from vuinspect.render import safe_text

from . import intercept
from .message_list import ColumnHeader, MessageList
from .prompt import PromptBar
from .rowtext import TIME_MODES
from .search import matcher, save_rows, search

if TYPE_CHECKING:
    from .model import Model
    from .sources import Source


class ListActions(App[None]):
    """The list's actions; the state they use is set up by the app's ``__init__``."""

    model: Model
    source: Source
    control: intercept.Control | None
    holds: intercept.Holds
    view: str
    search_text: str
    last_saved: tuple[str, int] | None
    _search_cancel: threading.Event
    _comment_row: int | None
    _jumped_to: int | None

    if TYPE_CHECKING:  # provided by the app

        @property
        def message_list(self) -> MessageList: ...

        def action_view(self, view: str) -> None: ...

        def jump_to_frame(self, number: int) -> bool: ...

        def _refresh_detail(self, row: int | None = -1) -> None: ...

        def _update_title(self) -> None: ...

    # -- prompt: search, go to, save, comment ------------------------------------------------
    @property
    def prompt(self) -> PromptBar:
        """The prompt line above the footer (``prompt.open(mode, label, value, placeholder)``)."""
        return self.query_one(PromptBar)

    @property
    def prompt_mode(self) -> str | None:
        """What the open prompt asks for (search, goto, save, comment, intercept), or None."""
        return self.prompt.mode

    def on_prompt_bar_closed(self, event: PromptBar.Closed) -> None:
        if self.view == "messages":
            self.message_list.focus()

    def on_prompt_bar_answered(self, event: PromptBar.Answered) -> None:
        mode, text = event.mode, event.text
        if mode == "comment" and self._comment_row is not None:
            self.set_comment(self._comment_row, text)
            return
        if mode == "intercept":
            intercept.set_filter(self, text)
            return
        if not text:
            return
        if mode == "search":
            self.search_text = text
            self.start_search(forward=True)
        elif mode == "goto":
            try:
                number = int(text, 0)
            except ValueError:
                self.notify(f"not a frame number: {text}", severity="error", markup=False)
                return
            self.jump_to_frame(number)
        elif mode == "save":
            self.save(text)

    def action_comment(self) -> None:
        """Add or edit the selected frame's comment (pcapng opt_comment; ``w`` saves it)."""
        row = self.message_list.selected_row
        if row is None:
            return
        self._comment_row = row
        self.prompt.open(
            "comment",
            f"comment on frame {row + 1}:",
            self.model.comment(row) or "",
            "text (Enter sets it, empty removes it, w saves; Esc cancels)",
        )

    def set_comment(self, row: int, text: str) -> None:
        self.model.comments[row] = text
        self._refresh_detail()  # (the detail's signature holds the comment: it redraws)
        self.message_list.model_changed(rows_changed=False)

    def action_search(self) -> None:
        self.action_view("messages")
        self.prompt.open(
            "search",
            "/ search:",
            self.search_text,
            "a filter expression or text (Enter searches, Esc cancels)",
        )

    def action_search_next(self) -> None:
        self.start_search(forward=True)

    def action_search_prev(self) -> None:
        self.start_search(forward=False)

    def start_search(self, forward: bool) -> None:
        if not self.search_text:
            self.action_search()
            return
        self._search_cancel.set()
        self._search_cancel = threading.Event()
        _, how = matcher(self.search_text)
        self.notify(f"searching ({how}): {self.search_text}", timeout=1.5, markup=False)
        self._search_worker(
            self.search_text, self.message_list.cursor, forward, self._search_cancel
        )

    @work(thread=True, exclusive=True, group="search")
    def _search_worker(self, text: str, start: int, forward: bool, cancel: threading.Event) -> None:
        pos, wrapped = search(self.model, text, start, forward, cancel)
        if not cancel.is_set():
            self.call_from_thread(self._search_done, text, pos, wrapped)

    def _search_done(self, text: str, pos: int | None, wrapped: bool) -> None:
        if pos is None:
            self.notify(f"not found: {text}", severity="warning", markup=False)
            return
        if wrapped:
            self.notify("search wrapped around", timeout=1.5)
        self.message_list.follow = False
        self._jumped_to = self.model.row_at(pos)
        self.message_list.cursor = pos

    def action_goto(self) -> None:
        self.action_view("messages")
        self.prompt.open("goto", ": go to frame:", "", "frame number (Enter jumps, Esc cancels)")

    def action_save(self) -> None:
        marks = self.message_list.marks
        what = f"{len(marks)} marked frames" if marks else f"{len(self.model):,} frames in view"
        base = os.path.splitext(os.path.basename(self.source.name or "capture"))[0]
        default = os.path.abspath(f"{base}-{'marked' if marks else 'view'}.pcapng")
        self.prompt.open("save", f"save {what} to:", default)

    def save(self, path: str) -> None:
        marks = self.message_list.marks
        rows = sorted(marks) if marks else self.model.shown_rows()
        self._save_worker(rows, os.path.expanduser(path))

    @work(thread=True, exclusive=True, group="save")
    def _save_worker(self, rows: Sequence[int], path: str) -> None:
        try:
            n = save_rows(self.model, rows, path)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, the app goes on
            self.call_from_thread(
                self.notify, safe_text(f"save failed: {exc}"), severity="error", markup=False
            )
            return
        self.last_saved = (path, n)
        self.call_from_thread(self.notify, safe_text(f"saved {n} frames to {path}"), markup=False)

    # -- actions: list ------------------------------------------------------------------------
    def action_pair(self) -> None:
        row = self.message_list.selected_row
        if row is None:
            return
        for msg in self.model.messages(row):
            target = msg.reply_in or msg.reply_to
            if target:
                self.jump_to_frame(target)
                return
        self.notify("no paired request/reply", severity="warning")

    def action_mark(self) -> None:
        lst = self.message_list
        row = lst.selected_row
        if row is None:
            return
        lst.marks.symmetric_difference_update({row})
        lst.model_changed(rows_changed=False)
        self._update_title()

    def _jump_mark(self, forward: bool) -> None:
        lst = self.message_list
        if not lst.marks:
            self.notify("no marks (m marks a message)", severity="warning")
            return
        current = lst.selected_row if lst.selected_row is not None else -1
        order = sorted(lst.marks)
        after = [r for r in order if (r > current if forward else r < current)]
        target = (
            (after[0] if forward else after[-1]) if after else (order[0] if forward else order[-1])
        )
        self._jumped_to = target
        if not lst.show_row(target):
            self.notify(f"marked frame {target + 1} is hidden by the filter", severity="warning")

    def action_next_mark(self) -> None:
        self._jump_mark(True)

    def action_prev_mark(self) -> None:
        self._jump_mark(False)

    def action_time_mode(self) -> None:
        lst = self.message_list
        lst.time_mode = TIME_MODES[(TIME_MODES.index(lst.time_mode) + 1) % len(TIME_MODES)]
        header = self.query_one(ColumnHeader)
        header.time_mode = lst.time_mode
        header.refresh()
        lst.model_changed(rows_changed=False)

    def action_follow(self) -> None:
        lst = self.message_list
        lst.follow = not lst.follow
        if lst.follow:
            lst.action_last()
        self._update_title()
