"""frames.py: the event, ring and notify frames' JSON and event_info, which never raises
(the hostile inputs, deep and huge, are tests/reliability/test_hostile_files.py)."""

from __future__ import annotations

import json

from vuinspect.frames import (
    MAX_EVENT_DEPTH,
    MAX_EVENT_JSON,
    Frame,
    event_frame,
    event_info,
    notify_frame,
    ring_frame,
)


def note(data: bytes) -> Frame:
    return Frame(1, 1, "main", "f2b", data, (), "note")


def test_event_frames_carry_compact_sorted_json():
    f = event_frame("open", 5, 2, {"label": "blk0", "device": "blk"}, channel="backend")
    assert (f.ts_ns, f.conn, f.channel, f.direction, f.kind, f.fds) == (
        5,
        2,
        "backend",
        "f2b",
        "open",
        (),
    )
    assert f.data == b'{"device":"blk","label":"blk0"}'
    assert event_info(f) == {"device": "blk", "label": "blk0"}


def test_ring_and_notify_frames():
    r = ring_frame(7, 3, {"vring": 1, "num": 256})
    assert (r.kind, r.conn, r.data) == ("ring", 3, b'{"vring":1,"num":256}')
    n = notify_frame(9, 3, 0, "kick", 4, 1, 8)
    assert n.kind == "notify" and json.loads(n.data) == {
        "vring": 0,
        "signal": "kick",
        "count": 4,
        "first_ns": 1,
        "last_ns": 8,
    }


def test_event_info_never_raises_and_always_gives_a_dict():
    assert event_info(note(b"[1, 2]")) == {"value": [1, 2]}
    assert event_info(note(b"7")) == {"value": 7}
    assert event_info(note(b'{"text": "cut')) == {"text": '{"text": "cut'}
    assert event_info(note(b"\xff\xfe")) == {"text": "\ufffd\ufffd"}
    assert event_info(note(b"")) == {"text": ""}


def test_depth_up_to_the_limit_is_parsed_past_it_is_text():
    def nested(depth: int) -> bytes:  # the object is one level, the lists the rest; the
        # sibling lists add brackets, not depth (past MAX_EVENT_DEPTH brackets the guard counts)
        return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b',"b":[[],[],[]]}'

    assert "a" in event_info(note(nested(MAX_EVENT_DEPTH)))
    assert set(event_info(note(nested(MAX_EVENT_DEPTH + 1)))) == {"text"}
    quoted = b'{"a": "' + b"[" * 100 + b'"}'  # brackets inside a string do not count
    assert event_info(note(quoted)) == {"a": "[" * 100}


def test_size_limit():
    at = b'{"t":"' + b"x" * (MAX_EVENT_JSON - 8) + b'"}'
    assert len(at) == MAX_EVENT_JSON and event_info(note(at))["t"].startswith("xxx")
    over = at[:-2] + b'x"}'
    info = event_info(note(over))
    assert info["truncated"] == MAX_EVENT_JSON + 1 and info["text"].endswith("...")
