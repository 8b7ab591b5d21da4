"""`read --stats` counts the proxy's rule and addon firings (issue 14 item 4).

The real CLI proxy between the in-repo front-end and back-end peers, with two rules
(one that fires, one that never matches) and an addon that delays one request and
raises on another; the capture's note events are what `read --stats` counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import backend_args, proxy_command, stop, wait_path

pytestmark = pytest.mark.timeout(60)

ADDON = """
def message(flow, msg):
    if msg.name == "SET_VRING_NUM":
        msg.delay(0.001)
    if msg.name == "GET_QUEUE_NUM" and not msg.reply:
        raise RuntimeError("boom")
"""
FIRES = "delay 1ms: name == SET_VRING_ENABLE"
NEVER = "drop: name == SET_VRING_CALL and payload.index == 7"


def _read(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    """A capture of a two-queue handshake through the proxy with the rules and the addon."""
    work = str(tmp_path_factory.mktemp("vufire"))
    be, px, cap = (os.path.join(work, n) for n in ("be.sock", "px.sock", "run.pcapng"))
    script = os.path.join(work, "addon.py")
    with open(script, "w") as f:
        f.write(ADDON)
    backend = subprocess.Popen([sys.executable, "-m", *backend_args(be)], stderr=subprocess.DEVNULL)
    proxy = None
    try:
        wait_path(be, backend)
        rules = ("--rule", FIRES, "--rule", NEVER, "--script", script)
        proxy = subprocess.Popen(
            proxy_command(px, be, "-w", cap, *rules),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_path(px, proxy)
        fe = Frontend(wire.connect(px, retries=100))
        fe.handshake(queues=2)
        fe.close()
        time.sleep(0.3)  # the close reaches the capture
    finally:
        if proxy is not None:
            stop(proxy, timeout=10, check=False)
        stop(backend, timeout=10, check=False)
    return cap


def test_stats_json_counts_rule_and_addon_firings(capture: str) -> None:
    rows = json.loads(_read("--stats", "--json", capture))["firings"]
    got = {(r["source"], r["name"], r["action"]): (r["fired"], r["not_fired"]) for r in rows}
    assert got == {
        ("rule", FIRES, "delay"): (2, 0),  # one SET_VRING_ENABLE per queue
        ("addon", "addon.py:message", "delay"): (2, 0),  # one SET_VRING_NUM per queue
        ("addon", "addon.py:message", "error"): (0, 1),  # GET_QUEUE_NUM: raised, forwarded
    }, rows
    assert rows[0]["fired"] == 2  # most firings first


def test_stats_text_shows_the_firings(capture: str) -> None:
    out = _read("--stats", capture)
    section = out.split("Rules and addons", 1)[1].splitlines()
    lines = [" ".join(x.split()) for x in section[2:] if x.strip()]
    assert f"rule delay 2 0 {FIRES}" in lines, out
    assert "addon delay 2 0 addon.py:message" in lines, out
    assert "addon error 0 1 addon.py:message" in lines, out
    assert NEVER not in out  # a rule that never fired has no note, hence no row


def test_stats_without_firings_has_no_section(capture: str) -> None:
    """A filter that keeps no note: the tables cover matching messages only, no firings."""
    out = _read("--stats", "-f", "name == GET_FEATURES", capture)
    assert "GET_FEATURES" in out and "Rules and addons" not in out


def test_firings_bounded_and_escaped() -> None:
    """Names come from the capture: a flood of distinct ones is one "other" row, and a
    control character never reaches the terminal."""
    from types import SimpleNamespace

    from vuinspect.stats import MAX_FIRING_ROWS, Firings, format_stats

    firings = Firings()
    for i in range(MAX_FIRING_ROWS + 500):
        info = {"rule": f"delay 1s: frame == {i}\x1b[2J", "action": "delay"}
        firings.add(SimpleNamespace(kind="note", info=info))  # type: ignore[arg-type]
    rows = firings.table()
    assert len(rows) == MAX_FIRING_ROWS + 1
    assert rows[0] == {
        "source": "other",
        "name": "(more distinct rules and addons)",
        "action": "-",
        "fired": 500,
        "not_fired": 0,
    }
    text = format_stats([], firings=firings)
    assert "\x1b" not in text and "\\x1b[2J" in text
