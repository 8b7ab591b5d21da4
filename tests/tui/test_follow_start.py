"""Follow mode from the first paint: rows the source already held when the app mounted
(``view --follow`` on a capture with 500 messages, a live spool with frames in it) put the
cursor on the newest row at once, not only once a new row arrives."""

from __future__ import annotations

from pathlib import Path

import pytest

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import bulk_frames, write_capture
from vuinspect.tui.sources import FileSource, LiveSource

from .conftest import screen_text, settle

SIZE = (100, 30)
N = 500


def _capture(path: Path) -> Path:
    return Path(write_capture(path, list(bulk_frames(N))))


def _list_lines(app: VuInspectApp) -> list[str]:
    """The message rows on screen (after the title, filter and column header lines)."""
    lst = app.message_list
    lines = screen_text(app).splitlines()
    top = lst.region.y
    return lines[top : top + lst.region.height]


def _on_newest(app: VuInspectApp) -> None:
    """The cursor is on the newest row, and that row is the list's last line on screen."""
    lst = app.message_list
    n = len(app.model)
    assert n == N
    assert lst.follow
    assert lst.cursor == n - 1, f"cursor on {lst.cursor}, not on the newest of {n} rows"
    assert lst.selected_row == app.model.row_at(n - 1)
    last = str(app.model.row_at(n - 1) + 1)
    rows = [line.split()[0] for line in _list_lines(app) if line.strip()]
    assert rows and rows[-1] == last, rows


async def _assert_follows_from_the_start(app: VuInspectApp, pilot) -> None:
    _on_newest(app)  # the first paint, rows known before any new one arrived
    await settle(pilot, app)
    await pilot.pause(0.1)
    _on_newest(app)  # still there once everything is decoded
    assert [m.frame for m in app.detail.msgs] == [N]  # the detail pane shows that row


def _file_following(tmp_path: Path) -> FileSource:
    """``view --follow`` on a capture that already holds N messages."""
    return FileSource(_capture(tmp_path / "big.pcapng"), follow=True)


def _live_spool(tmp_path: Path) -> LiveSource:
    """A live view whose spool had N frames before the app mounted."""
    live = LiveSource("proxy")
    for f in bulk_frames(N):
        live.push(f)
    return live


@pytest.mark.parametrize("make", [_file_following, _live_spool], ids=["file", "live"])
async def test_a_following_view_starts_on_the_rows_already_there(make, tmp_path: Path) -> None:
    source = make(tmp_path)
    app = VuInspectApp(source)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _assert_follows_from_the_start(app, pilot)
    finally:
        source.close()


async def test_without_follow_the_cursor_stays_on_the_first_row(tmp_path: Path) -> None:
    app = VuInspectApp(FileSource(_capture(tmp_path / "big.pcapng")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.pause(0.1)
        lst = app.message_list
        assert len(app.model) > 0
        assert not lst.follow
        assert lst.cursor == 0 and lst.selected_row == app.model.row_at(0)
        assert round(lst.scroll_offset.y) == 0
        assert [line.split()[0] for line in _list_lines(app) if line.strip()][0] == "1"
        assert [m.frame for m in app.detail.msgs] == [1]
