"""What the title line and an empty proxy view tell a newcomer, on screen.

An empty `vuinspect proxy` TUI says where it listens (title and the empty list:
where to point QEMU); the title keeps its state (frames, LIVE, follow) whole in 60 to
120 columns instead of being cut in the middle of the view tabs (`vuinspect demo`
at 120 columns showed ``LIVE  follow   [1``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import queue_frames, write_capture
from vuinspect.tui.sources import FileSource, LiveSource

from .conftest import screen_text, settle, until

LISTEN = "/tmp/a1/vu\x1b[2J.sock"  # a control character in a path must not reach the terminal
SHOWN = "/tmp/a1/vu\\x1b[2J.sock"
CONNECT = "/tmp/a1/be.sock"


def _lines(app: VuInspectApp) -> list[str]:
    return screen_text(app).splitlines()


def _list_lines(app: VuInspectApp) -> list[str]:
    lst = app.message_list
    return [line.rstrip() for line in _lines(app)[lst.region.y : lst.region.y + lst.region.height]]


@pytest.mark.parametrize("size", [(80, 24), (120, 35)], ids=["80x24", "120x35"])
async def test_an_empty_proxy_view_says_where_it_listens(size: tuple[int, int]) -> None:
    live = LiveSource(CONNECT, listening=[(LISTEN, CONNECT)])
    app = VuInspectApp(live)
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.2)
            text = screen_text(app)
            assert "\x1b" not in text
            title = _lines(app)[0]
            assert f"listening on {SHOWN}" in title and "LIVE  follow" in title, title
            shown = "\n".join(_list_lines(app))
            assert f"waiting for a connection on {SHOWN}\n    relayed to {CONNECT}" in shown
            assert f"QEMU: -chardev socket,id=vu0,path={SHOWN}" in shown
            # the first frames replace the hint with rows
            frames = queue_frames()[:5]
            for f in frames:
                live.push(f)
            await until(pilot, lambda: len(app.model) == len(frames), what="rows")
            await settle(pilot, app)
            shown = "\n".join(_list_lines(app))
            assert "waiting for a connection" not in shown and "OPEN" in shown
            assert f"listening on {SHOWN}" in _lines(app)[0]  # still where to point QEMU
    finally:
        live.close()


async def test_with_qemu_as_the_server_the_example_is_a_connecting_back_end() -> None:
    """--frontend connect: QEMU listens, the back-end is what comes to the proxy's socket."""
    live = LiveSource(CONNECT, listening=[(LISTEN, CONNECT)], peer_connects="backend")
    app = VuInspectApp(live)
    try:
        async with app.run_test(size=(120, 35)) as pilot:
            await pilot.pause(0.2)
            shown = "\n".join(_list_lines(app))
            assert f"dpdk-testpmd: --vdev 'net_vhost0,iface={SHOWN},client=1'" in shown, shown
            assert "QEMU: -chardev" not in shown
    finally:
        live.close()


async def test_a_narrow_proxy_view_keeps_the_path_and_its_state_in_the_title() -> None:
    live = LiveSource(CONNECT, listening=[("/tmp/vuinspect-a1-test/vu.sock", CONNECT)])
    app = VuInspectApp(live)
    try:
        async with app.run_test(size=(60, 15)) as pilot:
            await pilot.pause(0.2)
            title = _lines(app)[0].strip()
            assert "vu.sock" in title and title.endswith("0 frames  LIVE  follow"), title
    finally:
        live.close()


@pytest.mark.parametrize("width", [60, 80, 120])
async def test_the_demo_title_is_whole(tmp_path: Path, width: int) -> None:
    """`vuinspect demo`'s view: a followed capture under a long path, rings hidden."""
    path = tmp_path / "vuinspect-demo-blk.pcapng"
    source = FileSource(write_capture(path, queue_frames()), follow=True)
    app = VuInspectApp(source)
    try:
        async with app.run_test(size=(width, 24)) as pilot:
            await settle(pilot, app)
            title = _lines(app)[0].strip()
            assert f"{len(app.model.source):,} frames" in title, title
            assert f"{len(app.model):,} shown" in title, title
            assert "LIVE  follow" in title, title
            # a whole last part: the state or a whole view tab, never a tab cut in two
            assert title.endswith(("follow", "]")), title
            if width >= 120:
                assert "vuinspect-demo-blk.pcapng" in title, title
    finally:
        source.close()


async def test_the_title_refits_when_the_terminal_is_resized(tmp_path: Path) -> None:
    path = tmp_path / "vuinspect-demo-blk.pcapng"
    source = FileSource(write_capture(path, queue_frames()), follow=True)
    app = VuInspectApp(source)
    try:
        async with app.run_test(size=(120, 24)) as pilot:
            await settle(pilot, app)
            for width in (80, 60, 120):
                await pilot.resize_terminal(width, 24)
                await pilot.pause(0.1)
                title = _lines(app)[0].strip()
                assert "LIVE  follow" in title and title.endswith(("follow", "]")), title
    finally:
        source.close()


async def test_the_title_says_paused_as_soon_as_the_user_moves_up() -> None:
    """A quiet live view (no new frames): moving up pauses follow mode, and the title says
    so at once, not only when the next frame comes; End follows again."""
    live = LiveSource(CONNECT, listening=[("/tmp/vu.sock", CONNECT)])
    app = VuInspectApp(live)
    try:
        async with app.run_test(size=(120, 35)) as pilot:
            frames = queue_frames()[:40]
            for f in frames:
                live.push(f)
            await until(pilot, lambda: len(app.model) == len(frames), what="rows")
            await settle(pilot, app)
            assert "LIVE  follow" in _lines(app)[0]
            await pilot.press("k")
            await until(pilot, lambda: "paused" in _lines(app)[0], what="paused in the title")
            await pilot.press("end")
            await until(pilot, lambda: "LIVE  follow" in _lines(app)[0], what="follow again")
    finally:
        live.close()
