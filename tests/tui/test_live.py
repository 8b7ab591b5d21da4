"""Live mode: frames pushed from other threads (the proxy's sink) appear as they happen."""

from __future__ import annotations

import os
import re
import struct
import threading
import time
from collections.abc import Callable

import pytest

from tests.proxy.conftest import backend_server, proxy, sockdir  # noqa: F401 - the fixtures
from vuinspect.proxy.server import Route
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer
from vuinspect.testing.frontend import Frontend
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import Script, blk_handshake, demo_frames
from vuinspect.tui.sources import LiveSource

from .conftest import screen_text, until

SIZE = (140, 50)


def feed(source: LiveSource, frames, delay: float = 0.002) -> threading.Thread:
    def run() -> None:
        for f in frames:
            source.push(f)
            time.sleep(delay)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def test_rows_appear_and_follow_mode_pauses_when_scrolling_up() -> None:
    frames = demo_frames()
    live = LiveSource("test feed")
    app = VuInspectApp(live)
    async with app.run_test(size=SIZE) as pilot:
        assert app.message_list.follow
        feeder = feed(live, frames[:50])
        await until(pilot, lambda: app.model.decoded == 50 and len(app.model) == 50, what="rows")
        feeder.join(5)
        await pilot.pause(0.2)
        lst = app.message_list
        assert lst.selected_row == 49  # follow keeps the newest row selected
        assert "LIVE" in screen_text(app) and "follow" in screen_text(app)
        await pilot.press("k")
        assert not lst.follow and lst.selected_row == 48
        feed(live, frames[50:60]).join(5)
        await until(pilot, lambda: len(app.model) == 60, what="more rows")
        await pilot.pause(0.2)
        assert lst.selected_row == 48  # paused: the cursor stays where the user put it
        assert "paused" in screen_text(app)
        await pilot.press("G")
        assert lst.follow and lst.selected_row == 59
        feed(live, frames[60:]).join(5)
        await until(pilot, lambda: len(app.model) == len(frames), what="all rows")
        await pilot.pause(0.2)
        assert lst.selected_row == len(frames) - 1
        assert "GET_VRING_BASE" in screen_text(app)


async def test_stalled_request_waits_with_a_growing_age() -> None:
    frames = demo_frames()[:-1]  # ends with a GET_VRING_BASE nobody answers
    now = [frames[-1].ts_ns + 2_000_000_000]
    live = LiveSource()
    app = VuInspectApp(live, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        feed(live, frames, delay=0).join(5)
        await until(pilot, lambda: app.model.decoded == len(frames), what="decode")
        app.jump_to_frame(len(frames))
        await pilot.press("2")
        line = next(x for x in screen_text(app).splitlines() if "GET_VRING_BASE" in x)
        assert "2.0 s" in line and "back-end" in line
        now[0] += 3_000_000_000
        await pilot.pause(1.2)  # live views redraw every second without new frames
        line = next(x for x in screen_text(app).splitlines() if "GET_VRING_BASE" in x)
        assert "5.0 s" in line
        assert "waiting" in screen_text(app).lower()
        await pilot.press("1")
        app.jump_to_frame(len(frames))
        await pilot.pause(0.1)
        assert app.model.pending(len(frames) - 1)
        row = next(x for x in screen_text(app).splitlines() if " 90 " in x and "GET_VRING" in x)
        assert "waiting" in row


# -- through the real proxy ----------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_proxy_feeds_the_app_and_a_stalled_backend_shows_in_waiting(
    sockdir: str,  # noqa: F811 - the fixtures
    backend_server: Callable[..., BackendServer],  # noqa: F811
    proxy: Callable[..., object],  # noqa: F811
) -> None:
    live = LiveSource("proxy")
    backend_server("ok.sock")
    backend_server("stall.sock", stall=True)
    routes = [
        Route(
            listen=os.path.join(sockdir, f"p-{name}.sock"),
            connect=os.path.join(sockdir, f"{name}.sock"),
            frontend="listen",
            device="blk",
        )
        for name in ("ok", "stall")
    ]
    proxy(routes, sink=live.push)
    app = VuInspectApp(live)
    fe_ok = fe_stall = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            fe_ok = Frontend(wire.connect(routes[0].listen, retries=20))
            done = threading.Event()

            def talk() -> None:
                fe_ok.handshake(regions=2, queues=2, backend_channel=True)
                done.set()

            threading.Thread(target=talk, daemon=True).start()
            await until(pilot, done.is_set, what="handshake through the proxy")
            names = {"GET_FEATURES", "SET_MEM_TABLE", "SET_VRING_KICK", "SET_VRING_ENABLE"}
            await until(
                pilot,
                lambda: (
                    names
                    <= {m.name for r in range(app.model.decoded) for m in app.model.messages(r)}
                ),
                what="handshake rows",
            )
            await pilot.pause(0.2)
            assert "SET_VRING_ENABLE" in screen_text(app)  # follow mode shows the newest
            ok = next(s for s in app.model.sessions() if s.label == routes[0].connect)
            assert len(ok.regions) == 2 and sorted(ok.vrings) == [0, 1]
            # the stalled back-end: GET_FEATURES goes out, nothing comes back
            fe_stall = Frontend(wire.connect(routes[1].listen, retries=20))
            fe_stall.send(wire.GET_FEATURES)
            fe_stall.send(wire.GET_VRING_BASE, struct.pack("=II", 0, 0))
            await until(
                pilot,
                lambda: any(s.waiting() for s in app.model.sessions()),
                what="a waiting request",
            )
            stalled = next(s for s in app.model.sessions() if s.waiting())
            await pilot.press("2")
            app.query_one("StateView").conn = stalled.conn
            app.refresh_view()
            await pilot.pause(0.3)
            first = _age(screen_text(app))
            await pilot.pause(1.5)
            second = _age(screen_text(app))
            assert second > first, (first, second)
            text = screen_text(app)
            assert "GET_FEATURES" in text and "owes the reply" in text
    finally:
        for fe in (fe_ok, fe_stall):
            if fe is not None:
                fe.close()


def _age(text: str) -> float:
    line = next(x for x in text.splitlines() if "GET_FEATURES" in x and "back-end" in x)
    m = re.search(r"(\d+\.\d+) (ms|s)\b", line)
    assert m, line
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_script_builds_a_live_like_feed() -> None:
    s = Script()
    blk_handshake(s, 7, "/x.sock", queues=1)
    assert s.frames[0].kind == "open" and all(f.conn == 7 for f in s.frames)
    assert all(b.ts_ns >= a.ts_ns for a, b in zip(s.frames, s.frames[1:], strict=False))


async def test_follow_a_capture_that_is_still_being_written(tmp_path) -> None:
    from vuinspect.capture import CaptureWriter
    from vuinspect.tui.sources import FileSource

    frames = demo_frames()
    path = tmp_path / "growing.pcapng"
    writer = CaptureWriter(path)
    for f in frames[:30]:
        writer.write(f)
    writer.flush()
    source = FileSource(path, follow=True)
    app = VuInspectApp(source)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.decoded == 30, what="first part")
            for f in frames[30:]:
                writer.write(f)
            writer.flush()
            await until(pilot, lambda: app.model.decoded == len(frames), what="appended frames")
            await pilot.pause(0.2)
            assert app.message_list.follow
            assert app.message_list.selected_row == len(frames) - 1
    finally:
        writer.close()
        source.close()


async def test_a_full_spool_shows_its_note_on_a_small_terminal() -> None:
    """What a person sees when the live view's spool is full: the note row saying why the
    view stops there (80x24), while the title still says LIVE (the proxy goes on)."""
    s = Script()
    blk_handshake(s, 1)
    live = LiveSource("proxy", budget=sum(len(f.data) + 64 for f in s.frames))
    for f in s.frames:
        live.push(f)
    live.push(s.frames[-1])  # past the budget
    app = VuInspectApp(live)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.model.decoded == len(live), "the frames decoded")
        await pilot.press("G")  # the last row
        await until(pilot, lambda: "the live view stops here" in screen_text(app), "the note")
        text = screen_text(app)
        assert "LIVE" in text
    live.close()
