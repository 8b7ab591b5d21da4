"""Fixtures for the TUI tests: sample captures and a helper that waits for decoding."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from textual.pilot import Pilot

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import demo_frames, queue_frames, write_capture

ROOT = Path(__file__).resolve().parents[2]
REAL_CAPTURES = ROOT / "captures"


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A focused input shows its cursor, always: the blink (every 0.5 s from the last
    key or focus) made a snapshot depend on how long a loaded machine took to take it
    (CI: test_search_again_offers_the_last_one, cursor shown against a baseline without)."""
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


@pytest.fixture
def demo_path(tmp_path: Path) -> Path:
    """Two blk sessions: one finished and closed, one stalled on GET_VRING_BASE."""
    return Path(write_capture(tmp_path / "demo.pcapng", demo_frames()))


@pytest.fixture
def queue_path(tmp_path: Path) -> Path:
    """Two blk sessions with ring and notify frames: one stall resolved, one still open."""
    return Path(write_capture(tmp_path / "queues.pcapng", queue_frames()))


async def settle(pilot: Pilot, app: VuInspectApp, timeout: float = 10.0) -> None:
    """Wait until the model has decoded (and filtered) everything, then repaint."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    m = app.model
    while (
        not (m.finished or (m.source.live and not m.source.ended and m.decoded == len(m.source)))
        or m.filtering
    ):
        if loop.time() > deadline:
            raise AssertionError(f"model did not settle: {m.progress()}")
        await pilot.pause(0.02)
    app.poll()
    await pilot.pause()


async def until(
    pilot: Pilot, cond: Callable[[], object], what: str = "condition", timeout: float = 10.0
) -> None:
    """Wait (repainting) until ``cond()`` holds: what a loaded machine draws late."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def screen_text(app: VuInspectApp) -> str:
    """The screen as plain text (what a user reads), for assertions."""
    w, h = app.size
    console = Console(
        width=w,
        height=h,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
