"""The TUI's views on a capture of many connections (F audit): a view switch must not freeze.

Each connection number in a capture costs 80 bytes of file; switching to the
Connections view builds a DataTable row per connection on the UI thread (~2 ms
each: add_row, then Textual measures every row on idle).  Measured on the
shared 2-core machine: 50 000 connections froze the TUI 56-72 s per switch,
100 000 78-122 s; the State view 21-32 s.  Fixed (these were xfail strict): both
views build at most a page of ``connections.WINDOW`` rows, the waiting ones first
(tests/tui/test_many_connections.py: paging and reaching connection 40 000).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tui.conftest import settle

from vuinspect.capture import CaptureWriter
from vuinspect.frames import Frame
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.sources import FileSource

pytestmark = pytest.mark.timeout(120)


async def _rows_built(path: Path, view: str) -> int:
    """How many rows the Connections view's table (or the State view's list) holds once shown."""
    from textual.widgets import OptionList

    from vuinspect.tui.connections import ConnectionsView

    app = VuInspectApp(FileSource(path), poll_interval=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot, app, timeout=60)
        app.action_view(view)
        await pilot.pause()
        if view == "connections":
            rows = app.query_one(ConnectionsView).row_count
        else:
            rows = app.query_one("#state-conns", OptionList).option_count
        assert app.is_running
    return rows


def _capture(path: Path, n: int) -> Path:
    get_features = struct.pack("<III", 1, 1, 0)
    with CaptureWriter(path) as w:
        for i in range(n):
            w.write(Frame(i, i + 1, "main", "f2b", get_features))
    return path


async def test_connections_view_builds_a_bounded_number_of_rows(tmp_path: Path) -> None:
    rows = await _rows_built(_capture(tmp_path / "conns.pcapng", 3000), "connections")
    assert 0 < rows <= 1000, f"{rows} rows built for 3000 connections"


async def test_state_view_lists_a_bounded_number_of_connections(tmp_path: Path) -> None:
    rows = await _rows_built(_capture(tmp_path / "conns.pcapng", 3000), "state")
    assert 0 < rows <= 1000, f"{rows} options built for 3000 connections"
