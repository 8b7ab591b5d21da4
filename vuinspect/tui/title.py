"""The title line: what is open, how far indexing, decoding and filtering got, which view.

Capture-chosen texts (the file name, damage reasons, the filter) are escaped.
"""

from __future__ import annotations

import os

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


def title_text(m: Model, view: str, *, follow: bool, marks: int) -> Text:
    decoded, total = m.progress()
    t = Text()
    t.append("vuinspect ", style="bold")
    t.append(safe_text(os.path.basename(m.source.name) if not m.source.live else m.source.name))
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
        what = f"filter: {m.filter_text}" if m.filter_text else "routine rings hidden (R)"
        t.append(safe_text(f"  {what}  {len(m):,} shown"), style="cyan")
        if m.filtering:
            pct = 100 * m.filtered // m.decoded if m.decoded else 0
            t.append(f" (filtering {pct}%)", style="yellow")
    if m.source.live and not m.source.ended:
        t.append("  LIVE", style="bold green")
        t.append(
            "  follow" if follow else "  paused (End follows)",
            style="green" if follow else "yellow",
        )
    if marks:
        t.append(f"  {marks} marked", style="yellow")
    t.append(
        "   " + "  ".join(f"[{VIEW_TITLES[v]}]" if v == view else VIEW_TITLES[v] for v in VIEWS),
        style="dim",
    )
    return t
