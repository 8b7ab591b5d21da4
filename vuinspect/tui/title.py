"""The title line: what is open, how far indexing, decoding and filtering got, which view.

Capture-chosen texts (the file name, damage reasons, the filter) and the proxy's socket
paths are escaped.  Given the width, the line is made to fit by shortening or dropping
the least useful parts first (the view tabs, which the footer's keys also name; the why
of a filter; then the name), so that the state (frames, decoding, LIVE and follow or
paused) stays on screen at 80 columns.
"""

from __future__ import annotations

import os

from rich.cells import cell_len
from rich.text import Text

from vuinspect.render import safe_text

from .model import Model

VIEWS = ("messages", "state", "connections", "stats", "queues")
VIEW_TITLES = {
    "messages": "1 Messages",
    "state": "2 State",
    "connections": "3 Connections",
    "stats": "4 Statistics",
    "queues": "5 Queues",
}
#: The view tabs as the footer names them, for a narrower title.
VIEW_SHORT = {
    "messages": "1 List",
    "state": "2 State",
    "connections": "3 Conns",
    "stats": "4 Stats",
    "queues": "5 Queues",
}
#: Compaction steps, each also applying the ones before it (see title_text).
SHORT_TABS, CURRENT_TAB, SHORT_WHY, SHORT_NAME, NO_TABS, NO_WHY, CUT_NAME = range(1, 8)
BRAND = "vuinspect "
#: A name cut to fit keeps at least this many cells (with the ellipsis).
MIN_NAME = 12


def title_text(m: Model, view: str, *, follow: bool, marks: int, width: int | None = None) -> Text:
    """The title; with ``width``, the fullest form that fits in that many cells."""
    t = _title(m, view, follow, marks, 0)
    if width is None:
        return t
    for level in range(1, CUT_NAME + 1):
        if t.cell_len <= width:
            break
        t = _title(m, view, follow, marks, level, width)
    return t


def source_label(m: Model, short: bool = False) -> tuple[str, str]:
    """What is open, escaped, as (prefix, name): the proxy's listening sockets, a live
    source's name, or a file's name (always without its directory, which ``short`` also
    drops for a live one)."""
    listening = m.source.listening
    if listening:
        if short:
            return "listening on ", ", ".join(safe_text(lp) for lp, _ in listening)
        return "listening on ", ", ".join(
            f"{safe_text(lp)} -> {safe_text(cp)}" for lp, cp in listening
        )
    name = m.source.name
    return "", safe_text(os.path.basename(name) if short or not m.source.live else name)


def _cut(text: str, cells: int) -> str:
    """``text`` in ``cells`` screen cells (MIN_NAME at least; a wide character is two):
    its end, which names the file, after an ellipsis."""
    cells = max(cells, MIN_NAME)
    if cell_len(text) <= cells:
        return text
    i, used = len(text), 0
    while i and used + cell_len(text[i - 1]) <= cells - 1:  # from the end, once over
        i -= 1
        used += cell_len(text[i])
    return "…" + text[i:]


def _title(m: Model, view: str, follow: bool, marks: int, level: int, width: int = 0) -> Text:
    decoded, total = m.progress()
    t = Text()
    t.append(BRAND, style="bold")
    prefix, name = source_label(m, short=level >= SHORT_NAME)
    t.append(prefix + name)
    t.append(f"  {total:,} frames")
    if m.source.loading:
        t.append("  indexing…", style="yellow")
    damage = getattr(m.source, "load_error", None) or getattr(
        getattr(m.source, "index", None), "error", None
    )
    if damage is not None:
        t.append(safe_text(f"  damaged: {damage} (frames before it are shown)"), style="bold red")
    if m.error:
        t.append(safe_text(f"  {m.error}"), style="bold red")
    elif decoded < total or not m.finished and m.source.ended:
        pct = 100 * decoded // total if total else 100
        t.append(f"  decoding {pct}%", style="yellow")
    if m.visible is not None:
        shown = f"{len(m):,} shown"
        if level >= NO_WHY:
            what = f"  {shown}"
        elif level >= SHORT_WHY:
            what = f"  {shown}, " + ("filtered" if m.filter_text else "rings hidden (R)")
        else:
            why = f"filter: {m.filter_text}" if m.filter_text else "routine rings hidden (R)"
            what = f"  {why}  {shown}"
        t.append(safe_text(what), style="cyan")
        if m.filtering:
            pct = 100 * m.filtered // m.decoded if m.decoded else 0
            t.append(f" (filtering {pct}%)", style="yellow")
    if m.source.live and not m.source.ended:
        t.append("  LIVE", style="bold green")
        paused = "  paused" if level >= NO_TABS else "  paused (End follows)"
        t.append("  follow" if follow else paused, style="green" if follow else "yellow")
    if marks:
        t.append(f"  {marks} marked", style="yellow")
    if level < NO_TABS:
        names = VIEW_SHORT if level >= SHORT_TABS else VIEW_TITLES
        tabs = [f"[{names[v]}]" if v == view else names[v] for v in VIEWS]
        if level >= CURRENT_TAB:
            tabs = [f"[{VIEW_TITLES[view]}]"]
        t.append("   " + "  ".join(tabs), style="dim")
    if level >= CUT_NAME and t.cell_len > width:
        # The name gives the last cells; "listening on", then "vuinspect" go first (the
        # path is what to point QEMU at).
        rest = t[len(BRAND) + len(prefix) + len(name) :]
        room = width - rest.cell_len
        if room >= len(BRAND) + len(prefix) + MIN_NAME:
            label = Text(BRAND, style="bold") + prefix + _cut(name, room - len(BRAND) - len(prefix))
        elif room >= len(BRAND) + MIN_NAME:
            label = Text(BRAND, style="bold") + _cut(name, room - len(BRAND))
        else:
            label = Text(_cut(name, room))
        t = label + rest
    return t
