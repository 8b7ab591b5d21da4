"""Command-palette entries (ctrl+p): every action, plus ready-made filters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand

if TYPE_CHECKING:
    from .app import VuInspectApp

VIEW_NAMES = {
    "messages": "Messages",
    "state": "State",
    "connections": "Connections",
    "stats": "Statistics",
    "queues": "Queues",
}


def palette_commands(app: VuInspectApp) -> Iterator[SystemCommand]:
    """What ctrl+p offers besides Textual's own entries (theme, quit, keys...)."""
    for view, title in VIEW_NAMES.items():
        yield SystemCommand(
            f"View: {title}", f"switch to the {view} view", lambda v=view: app.action_view(v)
        )
    yield SystemCommand(
        "Filter: problems only",
        "show messages with a problem",
        lambda: app.apply_filter("problems"),
    )
    yield SystemCommand(
        "Filter: back-end channel",
        "messages on the back-end channel",
        lambda: app.apply_filter("channel == backend"),
    )
    yield SystemCommand(
        "Filter: slow replies (> 1 ms)",
        "replies slower than 1 ms",
        lambda: app.apply_filter("latency_us > 1000"),
    )
    yield SystemCommand("Filter: clear", "show every frame", lambda: app.apply_filter(""))
    yield SystemCommand("Search", "find a message (filter or text)", app.action_search)
    yield SystemCommand("Go to frame", "jump to a frame number", app.action_goto)
    yield SystemCommand("Jump to paired request/reply", "r", app.action_pair)
    yield SystemCommand("Time format: next", "absolute / relative / delta", app.action_time_mode)
    yield SystemCommand(
        "Ring frames in the list: toggle",
        "every ring/notify frame, or only those with a problem (R)",
        app.action_toggle_rings,
    )
    yield SystemCommand("Follow mode: toggle", "keep the newest message in view", app.action_follow)
    yield SystemCommand(
        "Save view as capture", "write the filtered or marked frames", app.action_save
    )
    yield SystemCommand(
        "Comment frame", "add or edit the frame's comment (c; w saves it)", app.action_comment
    )
    yield SystemCommand("Help: keys", "every key binding", app.action_help)
