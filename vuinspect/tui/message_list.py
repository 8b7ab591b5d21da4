"""The message list: a Line-API ScrollView over the model's rows (TECH.md §1).

Only the rows on screen are decoded and rendered; strips are cached per
(position, row, cursor, mark) and the cache is dropped whenever the model
moves on.  ``cursor`` is a view position (index into the filtered rows).
Follow mode keeps the cursor on the newest row and pauses as soon as the user
moves up or scrolls.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message as TMessage
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from vuinspect.render import safe_text

from .model import Model
from .rowtext import LINE_WIDTH, header_cells, layout_cells, row_cells

STYLE_KEYS = (
    "header",
    "f2b",
    "b2f",
    "event",
    "dim",
    "plain",
    "latency",
    "waiting",
    "mark",
    "problem-error",
    "problem-warning",
    "problem-note",
)


def _strip(cells: list[tuple[str, str]], styles: dict[str, Style], base: Style) -> Strip:
    return Strip([Segment(text, base + styles.get(key, Style())) for text, key in cells])


class ColumnHeader(Widget):
    """The column titles, scrolled sideways with the list."""

    DEFAULT_CSS = "ColumnHeader { height: 1; }"
    COMPONENT_CLASSES = {"column-header--title"}

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.time_mode = "abs"
        self.offset_x = 0

    def render_line(self, y: int) -> Strip:
        style = self.get_component_rich_style("column-header--title")
        cells = layout_cells(header_cells(self.time_mode), LINE_WIDTH)
        strip = Strip([Segment(t, style) for t, _ in cells])
        return strip.crop_extend(self.offset_x, self.offset_x + self.size.width, style)


class MessageList(ScrollView, can_focus=True):
    """Virtual list of frames; posts :class:`MessageList.Selected` when the cursor moves."""

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f,space", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last/follow", show=False),
        Binding("left,h", "scroll_left", "Left", show=False),
        Binding("right,l", "scroll_right", "Right", show=False),
    ]
    COMPONENT_CLASSES = {f"message-list--{k}" for k in STYLE_KEYS} | {
        "message-list--cursor",
        "message-list--marked",
    }

    cursor: reactive[int] = reactive(0, always_update=True, init=False)
    follow: reactive[bool] = reactive(False)

    class Selected(TMessage):
        """The cursor is on frame row ``row`` (None: the view is empty)."""

        def __init__(self, row: int | None) -> None:
            super().__init__()
            self.row = row

    class FollowChanged(TMessage):
        """Follow mode went on or off (the title says which)."""

    def __init__(self, model: Model, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.time_mode = "abs"
        self.marks: set[int] = set()
        self.held: dict[int, int] = {}  # row -> hold number (the intercept, intercept.py)
        self._cache: LRUCache[tuple, Strip] = LRUCache(512)
        self._styles: dict[str, Style] = {}
        self._rows = 0
        self._selected_row: int | None = None
        self.base_ns: int | None = None

    # -- model changes ------------------------------------------------------------------
    def on_mount(self) -> None:
        self.virtual_size = Size(LINE_WIDTH, 0)
        if self.model.source.live:
            self.action_last()  # follow mode from the first paint, over rows already there
        else:
            self.model_changed()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}
        self._cache.clear()

    def model_changed(self, rows_changed: bool = True) -> None:
        """The model moved on: new size, new contents for rows on screen."""
        n = len(self.model)
        if self.base_ns is None:
            self.base_ns = self.model.first_ts()
        grew = n != self._rows
        self._rows = n
        self.virtual_size = Size(LINE_WIDTH, n)
        self._cache.clear()
        if n == 0:
            self._select(None)
        elif self.follow and grew or self.cursor >= n:
            self.cursor = n - 1
        elif self._selected_row is None or (
            rows_changed and self.model.row_at(self.cursor) != self._selected_row
        ):
            self.cursor = self.cursor
        self.refresh()

    def show_row(self, row: int) -> bool:
        """Put the cursor on frame row ``row``; False when it is filtered out."""
        pos = self.model.position_of(row)
        if pos is None:
            return False
        if pos >= self._rows:
            self.model_changed(rows_changed=False)
        self.follow = False
        self.cursor = pos
        return True

    @property
    def selected_row(self) -> int | None:
        return self._selected_row

    # -- cursor --------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        # Clamp to the rows this widget has laid out (its virtual size), not to the
        # model's count of this instant: the scroll range must cover the cursor.
        return max(0, min(value, max(0, self._rows - 1)))

    def watch_cursor(self, old: int, new: int) -> None:
        if len(self.model) == 0:
            self._select(None)
            return
        self._scroll_to_cursor()
        self._cache_drop(old)
        self._cache_drop(new)
        self.refresh()
        self._select(self.model.row_at(new))

    def _select(self, row: int | None) -> None:
        if row != self._selected_row:
            self._selected_row = row
            self.post_message(self.Selected(row))

    def _cache_drop(self, pos: int) -> None:
        for key in [k for k in self._cache.keys() if k[0] == pos]:  # noqa: SIM118 - LRUCache
            self._cache.discard(key)

    def watch_follow(self) -> None:
        self.post_message(self.FollowChanged())

    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        # Textual moves the bar's thumb only while the bar is shown: a scroll made just
        # before it appeared (_scroll_to_cursor) would leave the thumb drawn at the top.
        if shown:
            self.vertical_scrollbar.position = self.scroll_y

    def on_resize(self) -> None:
        self._scroll_to_cursor()  # a prompt opening below must not hide the selected row

    def _scroll_to_cursor(self) -> None:
        # ``force``: Textual refuses a scroll while the widget shows no scroll bar, and the
        # bar only appears at the next layout.  A list that had no bar (empty, or all its rows
        # on screen) and grows past the screen in one go (a proxy's first connection) would
        # leave the cursor below the screen.  The scroll is still clamped to the new rows.
        height = self.scrollable_content_region.height or self.size.height
        top = round(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True, force=True)
        elif height and self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True, force=True)

    def _page(self) -> int:
        return max(1, (self.scrollable_content_region.height or self.size.height) - 1)

    def action_cursor_up(self) -> None:
        self.follow = False
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_page_up(self) -> None:
        self.follow = False
        self.cursor -= self._page()

    def action_page_down(self) -> None:
        self.cursor += self._page()

    def action_first(self) -> None:
        self.follow = False
        self.cursor = 0

    def action_last(self) -> None:
        """Go to the newest row; in a live view this turns follow mode back on."""
        if self.model.source.live:
            self.follow = True
        self.model_changed(rows_changed=False)
        self.cursor = self._rows - 1

    def action_scroll_left(self) -> None:
        self.scroll_to(x=max(0, self.scroll_offset.x - 8), animate=False)

    def action_scroll_right(self) -> None:
        self.scroll_to(x=self.scroll_offset.x + 8, animate=False)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.follow = False
        super()._on_mouse_scroll_up(event)

    async def _on_click(self, event: events.Click) -> None:
        pos = round(self.scroll_offset.y) + event.y
        if 0 <= pos < len(self.model):
            self.follow = pos == len(self.model) - 1 and self.follow
            self.cursor = pos
        await super()._on_click(event)

    def watch_scroll_x(self, old: float, new: float) -> None:
        super().watch_scroll_x(old, new)
        header = self.parent.query(ColumnHeader) if self.parent else None
        if header:
            h = header.first()
            h.offset_x = round(new)
            h.refresh()

    # -- rendering -----------------------------------------------------------------------
    def _placeholder(self) -> list[str]:
        """What an empty live proxy view says: where it waits for its first connection."""
        source = self.model.source
        if not source.listening or source.ended:
            return []
        lines = []
        for lp, cp in source.listening:
            lines += [
                f"  waiting for a connection on {safe_text(lp)}",
                f"    relayed to {safe_text(cp)}",
            ]
        first = safe_text(source.listening[0][0])
        if source.peer_connects == "backend":  # QEMU is the server: the back-end comes here
            return [*lines, f"  e.g. dpdk-testpmd: --vdev 'net_vhost0,iface={first},client=1'"]
        return [*lines, f"  e.g. QEMU: -chardev socket,id=vu0,path={first}"]

    def _style(self, key: str) -> Style:
        if not self._styles:
            self._styles = {
                k: self.get_component_rich_style(f"message-list--{k}", partial=True)
                for k in STYLE_KEYS
            }
            self._styles["cursor"] = self.get_component_rich_style("message-list--cursor")
            self._styles["marked"] = self.get_component_rich_style(
                "message-list--marked", partial=True
            )
        return self._styles[key]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        pos = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if pos >= len(self.model):
            lines = self._placeholder() if len(self.model) == 0 else []
            if 0 < y <= len(lines):
                line = Strip([Segment(lines[y - 1], base + self._style("dim"))])
                return line.crop_extend(scroll_x, scroll_x + width, base)
            return Strip.blank(width, base)
        row = self.model.row_at(pos)
        selected = pos == self.cursor
        marked = row in self.marks
        held = self.held.get(row, 0)
        key = (pos, row, selected, marked, self.time_mode, held)
        strip = self._cache.get(key)
        if strip is None:
            self._style("plain")
            cells = row_cells(
                self.model,
                pos,
                time_mode=self.time_mode,
                base_ns=self.base_ns,
                marked=marked,
                held=held,
            )
            line_base = base
            if marked:
                line_base = line_base + self._styles["marked"]
            if selected:
                line_base = line_base + self._styles["cursor"]
            strip = _strip(layout_cells(cells, max(LINE_WIDTH, width)), self._styles, line_base)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)
