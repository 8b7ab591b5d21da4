"""A capture's ring/notify/event JSON of the wrong type or range (F fuzz campaign).

Before: ``read`` / ``read --rings`` / the TUI died on ``"resolved": 1`` (TypeError),
a 401-digit ``duration_ns`` or notify ``last_ns`` (OverflowError), and ``read
--json`` wrote ``NaN`` (no JSON) for an event payload holding it.  Now the reader
checks a record's values once (``dataplane.records``, the Lua dissector's rules)
and refuses NaN/Infinity as malformed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vuinspect.capture import CaptureWriter
from vuinspect.cli import main
from vuinspect.frames import Frame, event_frame, event_info
from vuinspect.pipeline import Pipeline
from vuinspect.read import strict_json

pytestmark = pytest.mark.timeout(60)

TS = 1_764_000_000_000_000_000
HUGE = 10**400  # (json writes it; no float holds it)
SAMPLE = {"vring": 0, "ts_ns": TS, "layout": "split", "num": 256}

HOSTILE: dict[str, tuple[str, dict[str, Any]]] = {
    "resolved_int": ("ring", {**SAMPLE, "resolved": 1}),
    "resolved_true": ("ring", {**SAMPLE, "resolved": True}),
    "resolved_float": ("ring", {**SAMPLE, "resolved": 2.5}),
    "resolved_items": ("ring", {**SAMPLE, "resolved": [1, "x", [2]]}),
    "resolved_huge": ("ring", {**SAMPLE, "resolved": [{"code": "x", "duration_ns": HUGE}]}),
    "notify_huge": (
        "notify",
        {"vring": 0, "signal": "kick", "count": 2, "first_ns": 0, "last_ns": HUGE},
    ),
    "chains_int": ("ring", {**SAMPLE, "chains": 7, "inflight": [1], "problems": {"a": 1}}),
    "nested_huge": (
        "ring",
        {**SAMPLE, "chains": [{"head": HUGE, "descs": [{"addr": -1, "len": HUGE}]}]},
    ),
}


def _record(kind: str, info: dict[str, Any]) -> Frame:
    return Frame(TS, 1, "main", "f2b", json.dumps(info).encode(), (), kind)  # type: ignore[arg-type]


def _capture(path: Path, *frames: Frame) -> Path:
    with CaptureWriter(path) as w:
        w.write(event_frame("open", TS - 1, 1, {"label": "l"}))
        for f in frames:
            w.write(f)
    return path


def _read(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["read", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_read_shows_a_hostile_record_as_invalid_not_a_traceback(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind, info = HOSTILE[name]
    path = str(_capture(tmp_path / f"{name}.pcapng", _record(kind, info)))
    _read(capsys, path)
    ring_lines = _read(capsys, "--rings", "--detail", path)
    assert "invalid=" in ring_lines, ring_lines
    for line in _read(capsys, "--json", path).splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in read --json"))


def test_a_record_keeps_only_values_of_their_type_and_range() -> None:
    """The Lua dissector's rules (tests/wireshark/test_dissector.py, hostile ring fields):
    top-level times u64, other numbers u32, no bools for numbers; nested numbers u64."""
    bad = {
        "ts_ns": 1 << 64,
        "vring": 1 << 32,
        "num": -2,
        "avail_idx": 1.0,
        "used_idx": False,
        "ok": 1,
        "layout": ["split"],
        "event": "start",
        "invalid": ["spoofed"],
        "unknown": HUGE,
    }
    dropped = ["ts_ns", "vring", "num", "avail_idx", "used_idx", "ok", "layout"]
    info = event_info(_record("ring", bad))
    assert info == {"event": "start", "unknown": HUGE, "invalid": dropped}
    notify = {"vring": 1 << 32, "signal": ["kick"], "count": False, "first_ns": 1 << 64}
    fits = {"last_ns": (1 << 64) - 1, "event": None}  # (null: no value, kept)
    assert event_info(_record("notify", {**notify, **fits})) == {
        **fits,
        "invalid": list(notify),
    }
    good = {
        **SAMPLE,
        "chains": [{"head": 3, "descs": [{"addr": (1 << 64) - 1, "flag_names": ["NEXT"]}]}],
    }
    assert event_info(_record("ring", good)) == good
    # "resolved" is the reader's (the diagnoses a sample ends): a file's would fake one
    spoof = [{"code": "backend_stalled", "duration_ns": 5, "text": "t"}]
    assert event_info(_record("ring", {**good, "resolved": spoof})) == {
        **good,
        "invalid": ["resolved"],
    }
    nested = event_info(_record("ring", HOSTILE["nested_huge"][1]))
    assert nested["chains"] == [{"descs": [{}]}]
    assert nested["invalid"] == ["chains.head", "chains.descs.addr", "chains.descs.len"]


def test_an_invalid_sample_field_is_still_a_bad_sample() -> None:
    """A dropped optional field (``used_event``) does not make a good sample of a bad one."""
    frame = _record("ring", {**SAMPLE, "used_event": 2.5})
    msg = list(Pipeline().run([event_frame("open", TS - 1, 1, {}), frame]))[-1]
    assert msg.payload.get("invalid") == ["used_event"]
    assert [p.code for p in msg.problems] == ["ring_bad_sample"]


def test_nan_and_infinity_are_malformed_event_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b'{"text":NaN,"x":Infinity,"y":-Infinity}'
    note = Frame(TS, 1, "main", "f2b", data, (), "note")
    assert event_info(note) == {"text": data.decode()}
    ring = event_info(Frame(TS, 1, "main", "f2b", b'{"vring":0,"ts_ns":NaN}', (), "ring"))
    assert "ts_ns" not in ring
    out = _read(capsys, "--json", str(_capture(tmp_path / "nan.pcapng", note)))
    for line in out.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in read --json"))
    assert strict_json({"a": float("nan"), "b": [float("inf")], "c": 1.5}) == (
        '{"a":null,"b":[null],"c":1.5}'
    )
