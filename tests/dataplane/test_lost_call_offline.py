"""lost_call from a capture whose ring frames lack ``call_fd`` (an older vuinspect wrote
it): the proxy's note that a rule dropped SET_VRING_CALL, written just before the message,
is what tells the reader that no call fd reached the back-end.  A capture file read back
by ``vuinspect read --json``, as a person would."""

from __future__ import annotations

from pathlib import Path

from tests.blkguest import read_json
from vuinspect.capture import CaptureWriter
from vuinspect.dataplane import RingSample
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame, ring_frame
from vuinspect.rules import _note, parse_rule

S = 1_000_000_000
T0 = 1_000_000_000_000
RULE = "drop: name == SET_VRING_CALL"
CALL = build("main", 13, {"index": 0})


def dropped(t: float) -> list[Frame]:
    """The note the proxy writes for the dropped SET_VRING_CALL, then the message itself."""
    ts = T0 + int(t * S)
    note = _note(parse_rule(RULE), "dropped (1 fd(s) closed)", CALL, b"", "f2b")
    return [event_frame("note", ts, 1, note), sent(t)]


def sent(t: float) -> Frame:
    return Frame(T0 + int(t * S) + 1, 1, "main", "f2b", CALL, ("eventfd:[eventfd]",))


def ring(t: float, avail: int, used: int) -> Frame:
    """A sample as an older vuinspect wrote it: no ``call_fd`` key."""
    s = RingSample(0, T0 + int(t * S), "split", 256, avail_idx=avail, used_idx=used)
    d = s.to_json()
    d.pop("call_fd", None)
    return ring_frame(s.ts_ns, 1, {**d, "event": "tick"})


def samples(start: float) -> list[Frame]:
    """The request used at ``start`` + 0.2 s (the driver wants an interrupt), then 3 s idle."""
    return [ring(start, 0, 0), ring(start + 0.2, 1, 1)] + [
        ring(start + 0.2 + 0.5 * k, 1, 1) for k in range(1, 7)
    ]


def read(tmp_path: Path, frames: list[Frame]) -> list[dict]:
    """``vuinspect read --json`` of a capture of ``frames`` (after the connection's open)."""
    path = tmp_path / "old.pcapng"
    with CaptureWriter(str(path)) as w:
        for f in [event_frame("open", T0 - 1, 1, {"label": "t", "device": "blk"}), *frames]:
            w.write(f)
    return read_json(path)


def lost(rows: list[dict]) -> list[tuple[dict, dict]]:
    return [(r, p) for r in rows for p in r["problems"] if p["code"] == "lost_call"]


def test_dropped_set_vring_call_note_makes_a_lost_call(tmp_path: Path) -> None:
    rows = read(tmp_path, [*dropped(0.0), *samples(0.1)])
    assert not any("call_fd" in r["payload"] for r in rows if r["kind"] == "ring")
    ((row, p),) = lost(rows)
    assert "vring 0:" in p["text"] and "used idx 1" in p["text"], p
    assert "no call fd" in p["text"] and "SET_VRING_CALL" in p["text"], p
    assert row["ts_ns"] >= T0 + int(2.3 * S)  # 2 s after the used move, not before


def test_without_the_note_or_with_a_later_call_fd_nothing_or_resolved(tmp_path: Path) -> None:
    # the same capture without the drop note: the back-end got the fd, nothing is judged
    assert lost(read(tmp_path, [sent(0.0), *samples(0.1)])) == []
    # dropped, then a SET_VRING_CALL forwarded (a rule that drops once): no lost call after it
    rows = read(tmp_path, [*dropped(0.0), sent(0.05), *samples(0.1)])
    assert lost(rows) == []
    # a note of a rule that could not act, or of another dropped message: not a dropped call
    kick = build("main", 12, {"index": 0})
    other = _note(parse_rule("drop: name == SET_VRING_KICK"), "dropped", kick, b"", "f2b")
    rows = read(tmp_path, [event_frame("note", T0, 1, other), sent(0.0), *samples(0.1)])
    assert lost(rows) == []


def test_the_lost_call_resolves_when_a_call_fd_reaches_the_back_end(tmp_path: Path) -> None:
    frames = [*dropped(0.0), *samples(0.1), sent(3.5), ring(3.6, 1, 1), ring(3.7, 1, 1)]
    rows = read(tmp_path, frames)
    assert len(lost(rows)) == 1
    resolved = [x for r in rows for x in r["payload"].get("resolved", ())]
    assert [(x["code"], x["resolution"]) for x in resolved] == [("lost_call", "call")], resolved
