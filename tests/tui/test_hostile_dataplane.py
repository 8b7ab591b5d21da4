"""The TUI on a capture whose ring/notify JSON has values of a wrong type or range.

Before: ``vuinspect view`` died at startup on a ring sample with ``"resolved": 1``
or a 401-digit ``duration_ns`` (TypeError / OverflowError in the ring row text), and
as soon as ``R`` showed a notify row with a 401-digit ``last_ns``.  The reader now
drops such values (``dataplane.records``) and the rows say ``invalid=<key>``.
"""

from __future__ import annotations

from pathlib import Path

from vuinspect.frames import event_frame, notify_frame, ring_frame
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.samples import T0_NS, write_capture
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle, until

HUGE = 10**400
SAMPLE = {"vring": 0, "ts_ns": T0_NS + 1, "layout": "split", "num": 256}


async def test_hostile_ring_and_notify_values_show_as_invalid(tmp_path: Path) -> None:
    frames = [
        event_frame("open", T0_NS, 1, {"label": "x", "device": "blk"}),
        ring_frame(T0_NS + 1, 1, {**SAMPLE, "resolved": 1}),
        ring_frame(T0_NS + 2, 1, {**SAMPLE, "resolved": [{"code": "x", "duration_ns": HUGE}]}),
        notify_frame(T0_NS + 3, 1, 0, "kick", 2, 0, HUGE),
    ]
    path = write_capture(tmp_path / "hostile_rings.pcapng", frames)
    app = VuInspectApp(FileSource(path), poll_interval=3600)
    async with app.run_test(size=(200, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("R")  # the routine rings too
        await until(pilot, lambda: "invalid=last_ns" in screen_text(app), "the notify row")
        text = screen_text(app)
        # a file's own "resolved" is dropped whole (the reader's to say): never shown
        assert text.count("invalid=resolved") == 2 and "resolved x" not in text, text
        await pilot.press("5")
        await pilot.pause()
        assert app.is_running
        assert " c1 " in screen_text(app)
