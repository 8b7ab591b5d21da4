"""proxy/sink.py: the DropLedger's count and its notes, the DirectSink's frames (the
bounded sinks are tests/proxy/test_recorder.py and the FrameQueue's tests)."""

from __future__ import annotations

from vuinspect.frames import event_frame, event_info
from vuinspect.proxy.sink import DirectSink, DropLedger, FrameSink


def test_drops_are_counted_per_connection_and_said_once():
    ledger = DropLedger("capture writer")
    for conn in (1, 1, 2, None):
        ledger.drop(conn)
    assert ledger.dropped == 4 and ledger.pending == {1: 2, 2: 1}
    (one,) = ledger.notes(1)
    assert (one.kind, one.conn) == ("note", 1)
    info = event_info(one)
    assert info["dropped"] == 2 and info["text"].startswith(
        "2 frames dropped from the capture because the capture writer fell behind"
    )
    assert ledger.notes(1) == [] and ledger.pending == {2: 1}  # taken: said once
    (two,) = ledger.notes()
    assert event_info(two)["text"].startswith("1 frame dropped ")  # singular
    assert ledger.notes() == [] and ledger.dropped == 4


def test_a_direct_sink_hands_over_frames_on_the_calling_thread():
    got = []
    sink = DirectSink(got.append)
    assert isinstance(sink, FrameSink)
    record = sink.lane(3, "backend", "b2f")
    record(10, b"abc")
    sink.data(11, 4, "main", "f2b", b"de", ("memfd:guest",))
    ev = event_frame("open", 12, 4, {"label": "x"})
    sink.event(ev)
    assert [(f.ts_ns, f.conn, f.channel, f.direction, f.data, f.fds) for f in got[:2]] == [
        (10, 3, "backend", "b2f", b"abc", ()),
        (11, 4, "main", "f2b", b"de", ("memfd:guest",)),
    ]
    assert got[2] is ev
