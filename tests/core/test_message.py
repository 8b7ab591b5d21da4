"""message.Message: its NDJSON object uses the field table's names (one name per concept),
the old ``is_reply`` is an alias of ``reply``, ``severity`` is the worst problem's, and
timestamps format at any 64-bit value."""

from __future__ import annotations

import pytest

from vuinspect import fields as F
from vuinspect.message import Message, ts_text
from vuinspect.protocol.problems import problem


def test_the_ndjson_keys_are_the_field_names():
    d = Message(3, 7, 1_764_000_000_000_000_001, 2, "backend", "b2f").to_dict()
    assert set(d) == set(F.BY_NAME) | {"payload"}
    assert d["ts"] == "1764000000.000000001" and d["ts_ns"] == 1_764_000_000_000_000_001
    assert (d["frame"], d["index"], d["conn"], d["channel"], d["direction"]) == (
        7,
        3,
        2,
        "backend",
        "b2f",
    )
    assert d["problems"] == [] and d["severity"] is None and d["fds"] == []


def test_an_event_shows_its_info_as_payload():
    m = Message(1, 1, 0, 1, "main", "f2b", kind="open", payload={"x": 1}, info={"label": "a"})
    assert m.is_event and m.to_dict()["payload"] == {"label": "a"}
    msg = Message(2, 2, 0, 1, "main", "f2b", payload={"num": 256}, info={"label": "a"})
    assert not msg.is_event and msg.to_dict()["payload"] == {"num": 256}


def test_is_reply_is_an_alias_of_reply():
    m = Message(1, 1, 0, 1, "main", "b2f", reply=True)
    assert m.is_reply is True and m.to_dict()["reply"] is True and "is_reply" not in m.to_dict()
    m.reply = False
    assert m.is_reply is False
    with pytest.raises(AttributeError):  # read-only: one name to set
        m.is_reply = True


def test_severity_is_the_worst_problem():
    m = Message(1, 1, 0, 1, "main", "f2b")
    m.problems.append(problem("nonzero_padding"))
    assert m.severity == "note"
    m.problems.append(problem("reply_to_nothing"))
    assert m.severity == "error" and m.problem_codes == ["nonzero_padding", "reply_to_nothing"]
    d = m.to_dict()
    assert d["severity"] == "error"
    assert [p["code"] for p in d["problems"]] == m.problem_codes
    assert all(set(p) == {"code", "severity", "text"} for p in d["problems"])


def test_timestamps_format_at_any_64_bit_value():
    assert ts_text(0) == "0.000000000"
    assert ts_text(1_500_000_000) == "1.500000000"
    assert ts_text(2**64 - 1) == "18446744073.709551615"


def test_ts_text_is_the_exact_decimal_and_parse_ts_its_inverse():
    from vuinspect.message import parse_ts

    for ns in (0, 1, 1_764_000_000_123_456_789, 2**64 - 1, -1, -1_500_000_000, -(2**70)):
        assert parse_ts(ts_text(ns)) == ns, ns
    assert ts_text(-1) == "-0.000000001" and ts_text(-1_500_000_000) == "-1.500000000"
    assert parse_ts("1764000000") == 1_764_000_000 * 10**9
    assert parse_ts("1.5") == parse_ts(".5") + 10**9 == 1_500_000_000
    for bad in ("", "-", ".", "1.0000000001", "1e9", "0x10", "1.2.3", " 1", "+-1", "1."):
        assert parse_ts(bad) is None, bad
