"""A delay rule against real peers: QEMU waits, and the TUI's "Waiting" panel shows it
(issue 14, "Rules against real peers").

QEMU (TCG) boots the guest with a vhost-user-blk disk served by qemu-storage-daemon,
through ``vuinspect proxy --rule 'delay 3s: name == GET_VRING_BASE'``.  The first
GET_VRING_BASE comes when the guest's driver takes the device over from the firmware
(SeaBIOS started vring 0 and the reset stops it).  The app follows the capture the
proxy is writing: its State view lists GET_VRING_BASE under "Waiting" with an age that
grows while the proxy holds the request; the reply comes >= 3 s later, the panel
empties, and QEMU sent nothing on the connection meanwhile (its vhost-user calls are
synchronous: it waited).  The set-up is tests/blkguest.py.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.blkguest import blk_run, read_json, require_guest
from tests.tui.conftest import screen_text
from vuinspect.demo.guest import Guest
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.sources import FileSource

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

RULE = "delay 3s: name == GET_VRING_BASE"
#: The Waiting row: frame │ request │ waiter │ owner │ age ("850.0 ms" or "2.1 s").
ROW = re.compile(r"(\d+)\s*│\s*GET_VRING_BASE\s*│[^│]*│[^│]*│\s*(\d+(?:\.\d+)?) (ms|s)\b")


@pytest.fixture(scope="module")
def guest() -> Guest:
    return require_guest()


def _age(app: VuInspectApp) -> tuple[int, float] | None:
    """(frame, age in s) of the GET_VRING_BASE the Waiting panel lists, if it does."""
    m = ROW.search(screen_text(app))
    if m is None:
        return None
    return int(m.group(1)), float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)


async def test_delayed_get_vring_base_waits_and_the_panel_shows_it(
    guest: Guest, tmp_path: Path
) -> None:
    with blk_run(tmp_path, guest, extra=["--rule", RULE], seed="delay") as run:
        while run.capture.stat().st_size == 0:
            time.sleep(0.05)
        app = VuInspectApp(FileSource(run.capture, follow=True), poll_interval=0.1)
        async with app.run_test(size=(150, 40)) as pilot:
            end = time.monotonic() + 120
            while not app.model.sessions():
                assert time.monotonic() < end, "QEMU never connected"
                await pilot.pause(0.1)
            await pilot.press("2")  # the State view of the (only) connection
            while (first := _age(app)) is None:
                assert time.monotonic() < end, "no GET_VRING_BASE waiting in the State view"
                assert run.qemu.alive(), run.qemu.tail()
                await pilot.pause(0.1)
            t_first = time.monotonic()
            text = screen_text(app)
            assert "Waiting: requests still owed a reply" in text, text
            frame = first[0]
            ages = [first[1]]
            while (got := _age(app)) is not None and got[0] == frame:
                ages.append(got[1])
                assert time.monotonic() - t_first < 10, ages
                await pilot.pause(0.5)
            held = time.monotonic() - t_first
        assert len(ages) >= 3 and ages == sorted(ages), ages  # the wait grows, never resets
        assert ages[-1] - ages[0] >= 1.0, ages  # (the panel's ages tick about once a second)
        # the reply matches the rule's filter too: it is held 3 s more on its way back
        assert held <= 2 * 3.0 + 2.0, (ages, held)

    rows = read_json(run.capture)
    request = next(r for r in rows if r["frame"] == frame)
    assert request["name"] == "GET_VRING_BASE" and not request["reply"]
    reply = next(r for r in rows if r["frame"] == request["reply_in"])
    assert reply["latency_us"] >= 3_000_000, reply  # held 3 s by the proxy
    # the rule's firing is recorded next to the message it delayed
    note = [r for r in rows if r["kind"] == "note" and r["frame"] < frame and RULE in json.dumps(r)]
    assert note, "no note of the rule's firing before the delayed message"
    # QEMU waited: nothing else from it on the main channel until the reply came
    between = [
        r
        for r in rows
        if r["kind"] == "message"
        and r["channel"] == "main"
        and r["direction"] == "f2b"
        and request["ts_ns"] < r["ts_ns"] < reply["ts_ns"]
    ]
    assert between == [], [r["name"] for r in between]
