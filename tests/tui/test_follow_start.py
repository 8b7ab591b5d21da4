"""Follow mode from the first paint: rows the source already held when the app mounted
(``view --follow`` on a capture with 500 messages, a live spool with frames in it) put the
cursor on the newest row at once, not only once a new row arrives.  And a live view that was
empty when it mounted (`vuinspect proxy` waiting for its first connection) follows the rows
that come later, even when they all come in one burst."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vuinspect.frames import Frame
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import Script, blk_handshake, bulk_frames, write_capture
from vuinspect.tui.sources import FileSource, LiveSource

from .conftest import screen_text, settle, until

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


# -- the proxy's first connection: rows arrive only after the app mounted ---------------------
def _first_connection() -> list[Frame]:
    """One front-end's whole life (open, handshake, close): what `vuinspect proxy` shows first."""
    s = Script()
    blk_handshake(s, 1, "/run/qsd/blk0.sock", queues=1)
    s.close(1, "frontend closed the connection")
    return s.frames


def _feed_later(live: LiveSource, frames: list[Frame]) -> threading.Thread:
    """The viewer's feed thread (proxy_viewer._tui): frames pushed as the engine's stream
    brings them, here all in one burst as a short connection does."""

    def feed() -> None:
        for f in frames:
            live.push(f)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize(
    "size", [(60, 15), (80, 24), (120, 35)], ids=lambda s: "x".join(map(str, s))
)
async def test_a_live_view_empty_at_mount_follows_its_first_rows(size: tuple[int, int]) -> None:
    """Issue seen in `vuinspect proxy`: the first connection's rows came in after mount, and
    the list stayed on frames 1, 2, 3 (a scroll refused while the list had no scroll bar)
    while the cursor and the detail pane were on the last frame."""
    frames = _first_connection()
    live = LiveSource("/run/qsd/blk0.sock")
    app = VuInspectApp(live)
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.2)  # mounted and painted with no rows
            assert len(app.model) == 0 and app.message_list.follow
            _feed_later(live, frames).join(5)
            await until(pilot, lambda: len(app.model) == len(frames), what="the first rows")
            await settle(pilot, app)
            await pilot.pause(0.1)
            lst = app.message_list
            n = len(frames)
            assert lst.follow
            assert lst.cursor == n - 1, f"cursor on {lst.cursor}, not on the newest of {n}"
            rows = [line.split()[0] for line in _list_lines(app) if line.strip()]
            assert rows and rows[-1] == str(n), f"on screen: rows {rows}, newest is {n}"
            assert "CLOSE" in _list_lines(app)[len(rows) - 1]
            assert [m.frame for m in app.detail.msgs] == [n]
            # the scroll bar's thumb is drawn where the list is (the bottom), not at the top
            assert lst.show_vertical_scrollbar
            assert lst.vertical_scrollbar.position == lst.scroll_y == lst.max_scroll_y > 0
    finally:
        live.close()
