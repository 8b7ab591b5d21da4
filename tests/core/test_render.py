"""render.tree: the detail rows a face shows for a message; render.clock_text: the one UTC
clock both the text lines and the TUI column use."""

from __future__ import annotations

from vuinspect.message import Message
from vuinspect.render import clock_text, tree


def test_a_ring_sample_reads_as_a_sample_not_as_a_header():
    msg = Message(
        1,
        1,
        0,
        1,
        "main",
        "f2b",
        kind="ring",
        name="RING",
        payload={"vring": 0, "avail_idx": 7, "used_idx": 5, "in_flight": 2},
    )
    rows = tree(msg)
    assert rows[0] == (0, "header", "Ring sample: vring 0")
    assert (0, "payload", "Payload (record)") in rows
    assert not any("None" in text for _, _, text in rows)
    notify = Message(
        2,
        2,
        0,
        1,
        "main",
        "f2b",
        kind="notify",
        name="NOTIFY",
        payload={"vring": 1, "signal": "call", "count": 3},
    )
    assert tree(notify)[0] == (0, "header", "Notifications: vring 1")


def test_clock_text_is_the_one_utc_clock_of_read_and_the_tui():
    from vuinspect.lines import time_formatter
    from vuinspect.tui.rowtext import format_time

    t = 1_764_000_000_123_456_789
    assert clock_text(t) == "16:00:00.123456789" == time_formatter("a")(t)
    assert clock_text(t, date=True) == "2025-11-24 16:00:00.123456789"
    assert clock_text(t, digits=6) == "16:00:00.123456" == format_time(t, "abs", None, None)
    assert clock_text(10**30) is None  # past the calendar: the face says it in its own width
