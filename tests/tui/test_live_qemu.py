"""A real QEMU + qemu-storage-daemon run through the proxy, shown live by the app."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blkguest import blk_run, require_guest
from vuinspect.demo.guest import Guest
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.sources import LiveSource

from .conftest import screen_text

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def guest() -> Guest:
    return require_guest()


def _names(app: VuInspectApp) -> set[str]:
    m = app.model
    return {msg.name for r in range(m.decoded) for msg in m.messages(r)}


async def test_messages_appear_while_qemu_runs(guest: Guest, tmp_path: Path) -> None:
    live = LiveSource("proxy")

    @contextlib.contextmanager
    def in_process(listen: Path, connect: Path) -> Iterator[ProxyServer]:
        """The proxy in this process, its frames pushed to the app's live source."""
        route = Route(listen=str(listen), connect=str(connect), frontend="listen", device="blk")
        server = ProxyServer([route], live.push)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    app = VuInspectApp(live)
    async with app.run_test(size=(150, 50)) as pilot:
        with blk_run(
            tmp_path, guest, seed="tui", size_kib=256, disk=8 << 20, serve=in_process
        ) as run:
            deadline = time.monotonic() + 150
            seen_while_running = False
            while time.monotonic() < deadline:
                await pilot.pause(0.1)
                if "SET_VRING_KICK" in _names(app) and run.qemu.alive():
                    seen_while_running = True  # the ring started: shown before QEMU ended
                    text = screen_text(app)
                    assert "LIVE" in text
                    break
                if not run.qemu.alive():
                    break
            assert seen_while_running, run.qemu.tail()
            while run.qemu.alive() and time.monotonic() < deadline:
                await pilot.pause(0.2)
            ok, verdict = run.verdict(1)  # (QEMU has ended: its output is all there)
            assert ok, verdict
            await pilot.pause(0.3)
            session = app.model.sessions()[0]
            assert session.regions and session.vrings
            await pilot.press("2")
            app.refresh_view()
            await pilot.pause(0.2)
            text = screen_text(app)
            assert f"Memory table ({len(session.regions)} regions" in text
            assert "Vrings" in text
