"""render.tree: the detail rows a face shows for a message."""

from __future__ import annotations

from vuinspect.message import Message
from vuinspect.render import tree


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
