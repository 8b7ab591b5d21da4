"""Per-request statistics: counts, replies, problems, reply latency p50/p99/max.

The numbers come from :func:`vuinspect.stats.request_table`, the same table
``vuinspect read --stats`` prints.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message as TMessage
from textual.widgets import DataTable

from vuinspect.session import Session
from vuinspect.stats import request_table

from .rowtext import format_latency

COLUMNS = (
    "channel",
    "request",
    "requests",
    "replies",
    "problems",
    "p50",
    "p99",
    "max",
    "latencies",
)


def stats_rows(sessions: list[Session]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in request_table(sessions):
        lat = r["latency_us"]
        rows.append(
            (
                r["channel"],
                r["name"],
                str(r["requests"]),
                str(r["replies"]),
                str(r["problem_count"]),
                format_latency(lat["p50"]) or "-",
                format_latency(lat["p99"]) or "-",
                format_latency(lat["max"]) or "-",
                str(lat["n"]),
            )
        )
    return rows


class StatsView(DataTable):
    """The request table; ``f`` filters the message list to the request under the cursor."""

    BINDINGS = [Binding("f", "filter_request", "Filter to request")]

    class FilterRequest(TMessage):
        def __init__(self, channel: str, name: str) -> None:
            super().__init__()
            self.channel = channel
            self.name = name

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for c in COLUMNS:
            self.add_column(c, key=c)

    def update_stats(self, sessions: list[Session], lock: AbstractContextManager[Any]) -> None:
        with lock:
            rows = stats_rows(sessions)
        cursor = self.cursor_row
        self.clear()
        for r in rows:
            self.add_row(*(Text(c) for c in r))  # Text: never read as markup
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def action_filter_request(self) -> None:
        if self.row_count:
            row = self.get_row_at(self.cursor_row)
            self.post_message(self.FilterRequest(str(row[0]), str(row[1])))
