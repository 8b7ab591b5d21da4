"""What escaping a peer's text costs (F audit): linear, and at C speed, not ~2 µs a character.

A peer names its memfds (``memfd:NAME``, 249 bytes) and a message carries up
to 253 of them; every summary line escapes their descriptions.  At ~2 µs per
control character (a Python call per match) one such message costs the viewer
~120 ms against the peer's one ``sendmsg``; a capture of notes full of ESC reads
at ~0.5 MB/s.
"""

from __future__ import annotations

import json
import time

import pytest

from vuinspect.render import safe_text

pytestmark = pytest.mark.timeout(60)


def _best(fn, arg, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t)
    return best


def test_escaping_control_text_costs_about_what_json_escaping_does() -> None:
    evil = "\x1b[2J\u202e" * 300_000  # 1.2 M characters, all to be escaped
    assert safe_text(evil[:10]) == "\\x1b[2J\\u202e\\x1b[2J\\u202e"
    ours = _best(safe_text, evil)
    baseline = _best(json.dumps, evil)  # C-speed escaping of the same characters
    # one translate table reads ~8-18x json.dumps here (its dict lookup a character); a
    # Python call per character read ~100x: the bound sits between, clear of both
    assert ours <= 50 * baseline, f"safe_text {ours:.3f} s, json.dumps {baseline:.3f} s"
