"""The State view's header counts every problem of the connection, the data plane's too."""

from __future__ import annotations

import re
from pathlib import Path

from vuinspect.pipeline import Pipeline
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import queue_frames
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle


def _problems_of(conn: int) -> tuple[int, int]:
    """(all problems of ``conn``'s messages, those on its ring/notify messages), as read."""
    msgs = [m for m in Pipeline().run(queue_frames()) if m.conn == conn]
    dp = sum(len(m.problems) for m in msgs if m.kind in ("ring", "notify"))
    return sum(len(m.problems) for m in msgs), dp


async def test_header_problem_count_includes_data_plane_findings(queue_path: Path) -> None:
    total, dp = _problems_of(2)
    assert dp >= 1  # connection 2's vring 0 is diagnosed backend_stalled
    app = VuInspectApp(FileSource(queue_path))
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot, app)
        msgs = Pipeline().run(queue_frames())
        assert app.jump_to_frame(max(m.frame for m in msgs if m.conn == 2 and m.kind == "message"))
        await pilot.press("2")
        await settle(pilot, app)
        text = screen_text(app)
        assert "Connection 2:" in text
        head = next(line for line in text.splitlines() if "messages " in line)
        found = re.search(r"problems (\d+)(?: \((\d+) data plane\))?", head)
        assert found, head
        assert int(found[1]) == total and int(found[2] or 0) == dp, head
        assert "backend_stalled" in text  # ... and the finding itself, in Waiting


async def test_a_redraw_while_the_view_is_being_taken_down_does_nothing(queue_path: Path) -> None:
    """As the app exits, Textual removes the view's children while the poll timer still runs.

    A redraw then found no OptionList and the exit ended in a traceback (seen in CI).
    """
    from textual.widgets import OptionList

    from vuinspect.tui.state_view import StateView

    app = VuInspectApp(FileSource(queue_path))
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot, app)
        await pilot.press("2")
        await settle(pilot, app)
        view = app.query_one(StateView)
        await view.query_one(OptionList).remove()
        app.refresh_view()  # raised NoMatches before
        app.poll()
        await pilot.pause(0.1)
        assert app.is_running


async def test_enter_on_a_connection_opens_the_state_view_on_that_connection(
    demo_path: Path,
) -> None:
    """The State view opened on the list's selected row's connection instead (H's finding)."""
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot, app)
        conns = sorted({s.conn for s in app.model.sessions()})
        assert len(conns) >= 2
        row = app.message_list.selected_row
        assert row is None or app.model.frame(row).conn == conns[0]
        await pilot.press("3")
        await settle(pilot, app)
        await pilot.press("down", "enter")
        await settle(pilot, app)
        assert app.view == "state"
        assert f"Connection {conns[1]}:" in screen_text(app)
