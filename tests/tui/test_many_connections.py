"""Many connections: the State and Connections views list a page of them, the broken one first.

Past ``WINDOW`` connections both views build at most a page of rows (Textual
costs ~2 ms a row); the user reaches any connection by its messages (``2`` from
a row of the list), by the page keys ``[`` ``]``, or by Enter on a "… more" line.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from textual.widgets import OptionList

from vuinspect.capture import CaptureWriter
from vuinspect.frames import Frame
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.connections import WINDOW, ConnectionsView
from vuinspect.tui.sources import FileSource
from vuinspect.tui.state_view import StateView

from .conftest import screen_text, settle

pytestmark = pytest.mark.timeout(120)

N = 41_000
STUCK = 30_000  # the one connection whose GET_FEATURES nobody answers


def _capture(path: Path, n: int = N, stuck: int = STUCK) -> Path:
    """Connection c (1..n): GET_FEATURES and its reply (frames 2c-1, 2c), but stuck's reply."""
    ask = struct.pack("<III", 1, 1, 0)
    reply = struct.pack("<IIIQ", 1, 1 | 4, 8, 1 << 32)
    with CaptureWriter(path) as w:
        for c in range(1, n + 1):
            w.write(Frame(2 * c, c, "main", "f2b", ask))
            if c != stuck:
                w.write(Frame(2 * c + 1, c, "main", "b2f", reply))
    return path


def _listed(app: VuInspectApp) -> tuple[list[str], str | None]:
    """The State view's option ids, and the highlighted one's."""
    ol = app.query_one("#state-conns", OptionList)
    ids = [str(ol.get_option_at_index(i).id) for i in range(ol.option_count)]
    return ids, None if ol.highlighted is None else ids[ol.highlighted]


async def test_state_view_reaches_connection_40000_and_pages(tmp_path: Path) -> None:
    app = VuInspectApp(FileSource(_capture(tmp_path / "many.pcapng")), poll_interval=3600)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot, app, timeout=90)
        # the waiting one first on the first page; chosen: the selected message's (frame 1)
        await pilot.press("2")
        await pilot.pause()
        ids, chosen = _listed(app)
        assert len(ids) == WINDOW + 2 and ids[0] == "up" and ids[-1] == "down", ids[:3]
        assert ids[1] == str(STUCK) and chosen == "1"
        text = screen_text(app)
        assert f"… 1-{WINDOW} of {N:,}" in text and "[ ] page" in text
        # a message of connection 40,000, then 2: its state, listed and highlighted
        await pilot.press("1")
        assert app.jump_to_frame(2 * 40_000 - 2)  # two frames a connection, STUCK's one
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        ids, chosen = _listed(app)
        assert chosen == "40000" and ids[0] == "up" and ids[-1] == "down"
        assert len(ids) == WINDOW + 2
        assert app.query_one(StateView).conn == 40_000
        assert "Connection 40000:" in screen_text(app)
        # ] pages forward and chooses the page's first; [ comes back
        first = ids[1]
        await pilot.press("right_square_bracket")
        await pilot.pause()
        ids2, chosen2 = _listed(app)
        assert chosen2 == ids2[1] == str(int(first) + WINDOW)
        assert f"Connection {chosen2}:" in screen_text(app)
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert _listed(app)[1] == first
        # the last page: nothing more below; Enter on the head line pages back
        for _ in range(6):  # 40,000 was the middle of its page: 5 pages to the end
            await pilot.press("right_square_bracket")
            await pilot.pause()
        ids, _ = _listed(app)
        assert ids[-1] == str(N) and ids[0] == "up"
        ol = app.query_one("#state-conns", OptionList)
        ol.highlighted = 0
        await pilot.press("enter")
        await pilot.pause()
        assert _listed(app)[0][-1] == "down"


async def test_connections_view_pages_with_the_waiting_one_first(tmp_path: Path) -> None:
    n, stuck = 5 * WINDOW, 3 * WINDOW + 7  # the same code as for 41,000; decodes 40x faster
    capture = _capture(tmp_path / "many.pcapng", n, stuck)
    app = VuInspectApp(FileSource(capture), poll_interval=3600)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot, app, timeout=90)
        await pilot.press("3")
        await pilot.pause()
        table = app.query_one(ConnectionsView)
        assert table.row_count == WINDOW + 2
        assert str(table.get_row_at(1)[0]) == str(stuck) and table.cursor_row == 1
        text = screen_text(app)
        assert f"1-{WINDOW} of {n:,}" in text and "waiting, problems, open first; [ ] page" in text
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert table.row_count == WINDOW + 2
        assert table.cursor_row == 1 and str(table.get_row_at(1)[0]) == str(WINDOW)
        # Enter on the "… more" line below pages on; on a connection it opens the State view
        table.move_cursor(row=table.row_count - 1)
        await pilot.press("enter")
        await pilot.pause()
        assert str(table.get_row_at(1)[0]) == str(2 * WINDOW)
        await pilot.press("enter")
        await pilot.pause()
        assert app.view == "state"  # (which connection: the app's; see action_view)
