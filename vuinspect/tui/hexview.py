"""The hex pane: the bytes of the selected message, the selected field's bytes highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

BYTES_PER_LINE = 16
NARROW_WIDTH = 74  # below this many columns the pane shows 8 bytes a line


def hex_lines(
    data: bytes,
    highlight: tuple[int, int] | None,
    style: str = "reverse bold",
    per_line: int = BYTES_PER_LINE,
) -> Text:
    """``offset  hex (8 + 8)  ascii`` lines, like ``xxd`` and termshark's hex view."""
    out = Text(no_wrap=True, overflow="crop")
    lo, hi = highlight if highlight else (-1, -1)
    for base in range(0, len(data), per_line):
        chunk = data[base : base + per_line]
        out.append(f"{base:04x}  ", style="dim")
        for i in range(per_line):
            pos = base + i
            if i == 8:
                out.append(" ")
            if i < len(chunk):
                out.append(f"{chunk[i]:02x}", style=style if lo <= pos < hi else "")
                # keep a highlighted run continuous across the separating space
                sep_style = style if lo <= pos < hi - 1 and i != 7 and i < per_line - 1 else ""
                out.append(" ", style=sep_style)
            else:
                out.append("   ")
        out.append(" ")
        for i, b in enumerate(chunk):
            ch = chr(b) if 32 <= b < 127 else "."
            out.append(ch, style=style if lo <= base + i < hi else "dim")
        out.append("\n")
    if not data:
        out.append("(no bytes)", style="dim")
    return out


class HexView(VerticalScroll):
    """Scrollable hex dump; :meth:`show` replaces the bytes and the highlighted range."""

    DEFAULT_CSS = """
    HexView { width: 76; }
    HexView.-narrow { width: 44; }
    HexView > Static { width: auto; }
    """

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.data = b""
        self.highlight: tuple[int, int] | None = None
        self._static = Static("", id="hex-text")

    def compose(self) -> ComposeResult:
        yield self._static

    @property
    def per_line(self) -> int:
        return 8 if self.has_class("-narrow") else BYTES_PER_LINE

    def show(self, data: bytes, highlight: tuple[int, int] | None = None) -> None:
        self.data = data
        self.highlight = highlight
        self._static.update(hex_lines(data, highlight, per_line=self.per_line))
        if highlight:
            line = highlight[0] // self.per_line
            height = self.scrollable_content_region.height
            if height and not (self.scroll_y <= line < self.scroll_y + height):
                self.scroll_to(y=max(0, line - 1), animate=False)
        else:
            self.scroll_to(y=0, animate=False)


def narrow_for(screen_width: int) -> bool:
    """Half the width for the hex pane on terminals narrower than 130 columns."""
    return screen_width < 130
