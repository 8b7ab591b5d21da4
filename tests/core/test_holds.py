"""holds.Intercept and holds.Hold on their own: matching, the bound, the first decision wins,
a stop accepts, the control commands (the relay and TUI sides are in tests/tui/test_intercept.py)."""

from __future__ import annotations

import struct

import pytest

from vuinspect import holds as holds_mod
from vuinspect.filter import FilterError
from vuinspect.frames import Frame
from vuinspect.holds import Intercept, reencode
from vuinspect.pipeline import Pipeline
from vuinspect.testing import wire

VRING_STATE = struct.Struct("=II")


def vring_base(index: int = 0, num: int = 0) -> bytes:
    return wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, VRING_STATE.pack(index, num))


def decoded(data: bytes, channel: str = "main", direction: str = "f2b") -> list:
    return Pipeline().feed(Frame(1, 1, channel, direction, data))


def held(icpt: Intercept, data: bytes):
    hold, note = icpt.consider("main", "f2b", data, decoded(data))
    assert hold is not None and note is not None
    return hold, note


def test_held_messages_are_bounded(monkeypatch):
    """Past MAX_HELD a matching message passes, with a note saying so (not fired)."""
    monkeypatch.setattr(holds_mod, "MAX_HELD", 2)
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")
    data = vring_base(0)
    msgs = decoded(data)
    got = [icpt.consider("main", "f2b", data, msgs) for _ in range(3)]
    assert [h is not None for h, _ in got] == [True, True, False]
    assert got[2][1]["fired"] is False and "not held" in got[2][1]["text"]
    assert icpt.counts["passed"] == 1
    assert icpt.release_all() == 2 and icpt.held == {}


def test_bad_commands_are_reported_not_fatal():
    icpt = Intercept()
    for line in (b"not json", b"[]", b'{"cmd": "nope"}', b'{"cmd": "accept"}'):
        assert icpt.command(line)
    assert icpt.command(b'{"cmd": "edit", "id": 1}')  # an edit needs a payload
    assert icpt.command(b'{"cmd": "set-intercept", "filter": "name =="}')
    assert icpt.match is None
    assert icpt.command(b'{"cmd": "accept", "id": 7}') == "no held message #7"
    assert len(icpt.errors) == 6  # the last few kept, for the summary
    for _ in range(20):
        icpt.command(b"x")
    assert len(icpt.errors) == 10


def test_nothing_is_held_without_a_filter_or_when_nothing_matches():
    icpt = Intercept()
    data = vring_base(1)
    assert icpt.consider("main", "f2b", data, decoded(data)) == (None, None)
    icpt.set_filter("name == SET_VRING_NUM")
    assert icpt.consider("main", "f2b", data, decoded(data)) == (None, None)
    assert icpt.consider("main", "f2b", data, None) == (None, None)
    assert icpt.held == {} and icpt.counts["hold"] == 0


def test_a_hold_note_has_the_rules_shape():
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")
    data = vring_base(2)
    hold, note = held(icpt, data)
    assert hold.number == 1 and icpt.held == {1: hold}
    assert note == {
        "text": "intercept #1: held (waiting for a decision)",
        "rule": "intercept: name == GET_VRING_BASE",
        "action": "hold",
        "hold": 1,
        "direction": "f2b",
        "original": data.hex(),
        "new": data.hex(),
    }
    assert hold.outcome() is None  # undecided: the relay keeps waiting


def test_first_decision_wins_and_drop_sends_nothing():
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")
    hold, _ = held(icpt, vring_base(3))
    assert icpt.decide(hold.number, "drop") is None
    assert hold.outcome() == b""
    assert icpt.decide(hold.number, "accept") == f"no held message #{hold.number}"
    assert hold.decide("accept") is False  # decided already: the first one stays
    assert hold.outcome() == b"" and hold.how == "drop"
    assert [n["action"] for n in hold.notes] == ["drop"]
    assert icpt.counts["drop"] == 1 and icpt.counts["accept"] == 0
    assert icpt.summary() == "intercept: 1 held, 0 accepted, 0 edited, 1 dropped"


def test_a_stopping_link_accepts_what_is_undecided():
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")
    data = vring_base(4)
    hold, _ = held(icpt, data)
    assert hold.outcome(stopping=True) == data
    assert hold.notes[-1]["text"] == "intercept #1: accepted (proxy stopped)"
    assert icpt.held == {}


def test_edit_reencodes_and_a_bad_edit_leaves_it_held():
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")
    data = vring_base(5, 0)
    hold, _ = held(icpt, data)
    err = icpt.decide(hold.number, "edit", {"nosuchfield": 1})
    assert err and "cannot encode" in err and hold.how is None
    assert icpt.decide(hold.number, "edit", {"index": 6, "num": 0}) is None
    (again,) = decoded(hold.outcome())
    assert again.payload["index"] == 6 and hold.how == "edit"
    assert reencode(hold.msg, data, {"index": 5, "num": 0}) == data


def test_set_filter_tells_on_change_and_clearing_releases():
    icpt = Intercept()
    changes: list[bool] = []
    icpt.on_change = lambda: changes.append(icpt.active)
    with pytest.raises(FilterError):
        icpt.set_filter("name ==")
    assert changes == [] and not icpt.active
    icpt.set_filter("name == GET_VRING_BASE")
    icpt.set_filter("name == GET_VRING_BASE or name == SET_VRING_NUM")  # active already
    assert changes == [True]
    hold, _ = held(icpt, vring_base(7))
    icpt.set_filter("  ")
    assert changes == [True, False] and not icpt.active
    assert hold.how == "accept" and "intercept cleared" in hold.notes[-1]["text"]
    assert icpt.held == {}


def test_a_filter_that_cannot_judge_a_message_does_not_match():
    icpt = Intercept()
    icpt.set_filter("name == GET_VRING_BASE")

    def broken(msg) -> bool:
        raise TypeError("cannot judge")

    icpt.match = broken
    data = vring_base(8)
    assert icpt.consider("main", "f2b", data, decoded(data)) == (None, None)
