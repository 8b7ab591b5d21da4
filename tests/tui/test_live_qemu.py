"""A real QEMU + qemu-storage-daemon run through the proxy, shown live by the app."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.demo import runners, scenarios
from vuinspect.demo.guest import Guest, build_guest
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.sources import LiveSource

from .conftest import screen_text

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def guest() -> Guest:
    try:
        for program in ("qemu-system-x86_64", "qemu-storage-daemon"):
            runners.require(program)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    return build_guest()


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vutui-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _names(app: VuInspectApp) -> set[str]:
    m = app.model
    return {msg.name for r in range(m.decoded) for msg in m.messages(r)}


async def test_messages_appear_while_qemu_runs(guest: Guest, workdir: Path) -> None:
    image = workdir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    live = LiveSource("proxy")
    front = workdir / "vu.sock"
    with runners.storage_daemon(image, workdir / "qsd.sock", workdir):
        server = ProxyServer(
            [
                Route(
                    listen=str(front),
                    connect=str(workdir / "qsd.sock"),
                    frontend="listen",
                    device="blk",
                )
            ],
            live.push,
        )
        server.start()
        result: dict[str, object] = {}

        def run_guest() -> None:
            try:
                result["outcome"] = scenarios.guest_run(
                    runners.blk_device(front),
                    workdir,
                    guest,
                    "blk",
                    seed="tui",
                    size_kib=256,
                    timeout=150,
                )
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                result["error"] = exc

        app = VuInspectApp(live)
        try:
            async with app.run_test(size=(150, 50)) as pilot:
                qemu = threading.Thread(target=run_guest, daemon=True)
                qemu.start()
                deadline = time.monotonic() + 150
                seen_while_running = False
                while time.monotonic() < deadline:
                    await pilot.pause(0.1)
                    if "SET_VRING_KICK" in _names(app) and qemu.is_alive():
                        seen_while_running = True  # the ring started: shown before QEMU ended
                        text = screen_text(app)
                        assert "LIVE" in text
                        break
                    if not qemu.is_alive():
                        break
                assert seen_while_running, result
                while qemu.is_alive() and time.monotonic() < deadline:
                    await pilot.pause(0.2)
                assert "error" not in result, result
                ok, verdict = result["outcome"]  # type: ignore[misc]
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
        finally:
            server.stop()
