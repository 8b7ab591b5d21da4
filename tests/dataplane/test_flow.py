"""ring/notify frames through the one flow: capture file -> reader -> pipeline -> messages."""

from __future__ import annotations

import io

from vuinspect.capture import CaptureReader
from vuinspect.capture.writer import CaptureWriter
from vuinspect.dataplane import RingSample
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame, notify_frame, ring_frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.problems import CODES, DATAPLANE_CODES

S = 1_000_000_000
T0 = 1_700_000_000 * S


def sample(t: float, avail: int, used: int, vring: int = 0) -> Frame:
    s = RingSample(vring, T0 + int(t * S), "split", 256, avail_idx=avail, used_idx=used)
    return ring_frame(s.ts_ns, 1, s.to_json())


def data(t: float, request: int, values: dict, reply: bool = False) -> Frame:
    return Frame(
        T0 + int(t * S),
        1,
        "main",
        "b2f" if reply else "f2b",
        build("main", request, values, reply=reply),
    )


def roundtrip(frames: list[Frame]) -> list:
    buf = io.BytesIO()
    with CaptureWriter(buf) as w:
        for f in frames:
            w.write(f)
    buf.seek(0)
    read = list(CaptureReader(buf))
    assert [f.kind for f in read] == [f.kind for f in frames]
    assert [f.data for f in read] == [f.data for f in frames]
    return list(Pipeline(device="blk").run(read))


def test_codes_merged() -> None:
    assert DATAPLANE_CODES and all(CODES[c] is DATAPLANE_CODES[c] for c in DATAPLANE_CODES)


def test_stall_raised_then_resolved_with_duration() -> None:
    frames = [
        event_frame("open", T0, 1, {"label": "t"}),
        sample(0.0, 10, 10),
        sample(0.1, 14, 10),  # 4 in flight from 0.1 s
        sample(1.1, 14, 10),
        sample(2.2, 14, 10),  # still at 2.2 s: stalled
        sample(3.0, 14, 14),
    ]  # progress
    msgs = [m for m in roundtrip(frames) if m.kind == "ring"]
    assert [m.name for m in msgs] == ["RING"] * 5
    assert [m.problem_codes for m in msgs] == [[], [], [], ["backend_stalled"], []]
    stalled = msgs[3].problems[0]
    assert "vring 0" in stalled.text and "4 in flight" in stalled.text
    (resolved,) = msgs[4].payload["resolved"]
    assert resolved["code"] == "backend_stalled"
    assert resolved["duration_ns"] == int(2.9 * S)
    assert msgs[1].payload["in_flight"] == 4 and msgs[1].payload["avail_idx"] == 14


def test_receive_queue_of_net_is_not_stalled() -> None:
    frames = [sample(0, 10, 0), sample(3, 10, 0)]
    buf_msgs = list(Pipeline(device="net").run(frames))
    assert all(not m.problems for m in buf_msgs)


def test_get_vring_base_with_requests_in_flight_judged_at_the_stop_sample() -> None:
    get = [data(0.5, 11, {"index": 1, "num": 0}), data(0.6, 11, {"index": 1, "num": 5}, True)]
    stop = sample(0.55, 5, 2, vring=1)
    stop = Frame(stop.ts_ns, 1, "main", "f2b", stop.data[:-1] + b',"event":"stop"}', (), "ring")
    msgs = roundtrip([sample(0.0, 5, 2, vring=1), *get, stop])
    assert next(m for m in msgs if m.name == "GET_VRING_BASE").problem_codes == []
    last = [m for m in msgs if m.kind == "ring"][-1]
    assert last.problem_codes == ["ring_reset_in_flight"]
    assert "3 in flight" in last.problems[0].text and "vring 1" in last.problems[0].text
    # the stop sample shows the last requests done: nothing was in flight
    done = Frame(
        stop.ts_ns,
        1,
        "main",
        "f2b",
        stop.data.replace(b'"used_idx":2', b'"used_idx":5').replace(
            b'"in_flight":3', b'"in_flight":0'
        ),
        (),
        "ring",
    )
    msgs = roundtrip([sample(0.0, 5, 2, vring=1), *get, done])
    assert not [c for m in msgs for c in m.problem_codes if c == "ring_reset_in_flight"]


def test_close_with_requests_in_flight() -> None:
    msgs = roundtrip(
        [sample(0.0, 5, 2, vring=1), event_frame("close", T0 + S, 1, {"reason": "gone"})]
    )
    assert msgs[-1].kind == "close" and msgs[-1].problem_codes == ["ring_reset_in_flight"]


def test_notify_counts_and_session_state() -> None:
    frames = [
        notify_frame(T0, 1, 0, "kick", 7, T0, T0 + 9_000_000),
        notify_frame(T0 + 10_000_000, 1, 0, "call", 3, T0 + 10_000_000, T0 + 12_000_000),
        sample(0.0, 3, 0),
        sample(0.5, 3, 3),
    ]
    p = Pipeline(device="blk")
    msgs = list(p.run(roundtrip_frames(frames)))
    assert [m.kind for m in msgs] == ["notify", "notify", "ring", "ring"]
    assert msgs[0].payload == {
        "vring": 0,
        "signal": "kick",
        "count": 7,
        "first_ns": T0,
        "last_ns": T0 + 9_000_000,
    }
    state = p.sessions[1].dataplane.to_json()
    (ring,) = state["rings"]
    assert (ring["kicks"], ring["calls"], ring["progress"], ring["in_flight"]) == (7, 3, 3, 0)


def roundtrip_frames(frames: list[Frame]) -> list[Frame]:
    buf = io.BytesIO()
    with CaptureWriter(buf) as w:
        for f in frames:
            w.write(f)
    buf.seek(0)
    return list(CaptureReader(buf))


def test_damaged_ring_frame_is_a_problem_not_a_crash() -> None:
    bad = Frame(T0, 1, "main", "f2b", b'{"vring": -1}', (), "ring")
    junk = Frame(T0, 1, "main", "f2b", b"\xff" * 40, (), "notify")
    msgs = list(Pipeline().run([bad, junk]))
    assert [m.problem_codes for m in msgs] == [["ring_bad_sample"], ["ring_bad_sample"]]


def test_reading_many_samples_is_linear() -> None:
    """A file of stalled samples (the most a vring's window holds) costs the same per frame
    for 2x the frames: each sample re-judges a bounded window, never the whole history."""
    import time

    def cost(n: int) -> float:
        frames = [sample(i / 2, 5, 1) for i in range(n)]
        t = time.process_time()
        msgs = list(Pipeline(device="blk").run(frames))
        assert sum(m.problem_codes == ["backend_stalled"] for m in msgs) == 1
        return time.process_time() - t

    small, big = cost(2000), cost(4000)
    assert big < 3 * small + 0.05, (small, big)
