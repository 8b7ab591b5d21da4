"""The model must show exactly what the pipeline decodes, without keeping the messages."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vuinspect import samples as core_samples
from vuinspect.capture import read_frames
from vuinspect.filter import FilterError, compile_filter
from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.render import to_json
from vuinspect.tui.model import Model
from vuinspect.tui.samples import Script, blk_handshake, bulk_frames, demo_frames
from vuinspect.tui.sources import FileSource, FrameListSource, LiveSource

from .conftest import REAL_CAPTURES


def pipeline_json(frames: list[Frame]) -> list[dict]:
    msgs = list(Pipeline().run(frames))  # all first: requests get reply_in later
    return sorted((to_json(m) for m in msgs), key=lambda j: j["index"])


def model_json(model: Model) -> list[dict]:
    rows = range(len(model.source))
    return sorted((to_json(m) for r in rows for m in model.messages(r)), key=lambda j: j["index"])


def odd_frames() -> list[Frame]:
    """Demo traffic with a message split over two frames, junk before a message, a cut end."""
    frames = demo_frames()
    out: list[Frame] = []
    for i, f in enumerate(frames):
        if i == 18:
            out += [replace(f, data=f.data[:7], fds=()), replace(f, data=f.data[7:])]
        elif i == 25:
            out.append(replace(f, data=b"\xff" * 30 + f.data))
        elif i == 40:
            out.append(replace(f, data=f.data + frames[i + 2].data))  # two requests, one frame
        elif i == 42:
            continue
        else:
            out.append(f)
    out.append(Frame(out[-1].ts_ns + 5, 2, "main", "f2b", frames[20].data[:15]))
    return out


CASES = {
    "demo": demo_frames,
    "every_message": core_samples.every_message,
    "device_start": core_samples.device_start,
    "odd_framing": odd_frames,
    "bulk": lambda: list(bulk_frames(3000)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_rebuild_the_pipeline_messages(case: str) -> None:
    frames = CASES[case]()
    model = Model(FrameListSource(frames))
    model.run_to_end()
    assert model.decoded == len(frames) and model.finished
    got, want = model_json(model), pipeline_json(frames)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_odd_frames_keep_their_messages() -> None:
    model = Model(FrameListSource(odd_frames()))
    model.run_to_end()
    assert 18 in model.odd and model.odd[18] == []  # first half of a split message
    assert [m.name for m in model.odd[19]] == ["SET_MEM_TABLE"]
    assert len(model.odd[41]) == 2  # two messages in one frame (rows shift after the split)
    assert [m.kind for m in model.odd[26]][0] == "raw"
    last = len(model.source) - 1
    assert "truncated_payload" in model.messages(last)[0].problem_codes


@pytest.mark.parametrize("name", ["blk", "fs", "net"])
def test_real_captures_rebuild_exactly(name: str) -> None:
    path = REAL_CAPTURES / f"{name}.pcapng"
    if not path.exists():
        pytest.skip(f"{path} not recorded")
    source = FileSource(path)
    model = Model(source)
    model.run_to_end()
    assert model_json(model) == pipeline_json(list(read_frames(path)))
    source.close()


def test_rows_are_frames_and_pairs_are_links() -> None:
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    req = model.message(18)  # frame 19: SET_MEM_TABLE
    assert req is not None and req.name == "SET_MEM_TABLE" and req.reply_in == 20
    rep = model.message(model.row_of_frame(req.reply_in))
    assert rep is not None and rep.reply and rep.reply_to == 19 and rep.latency_us == 310.0


def test_undecoded_rows_are_painted_from_the_frame() -> None:
    frames = demo_frames()
    model = Model(FrameListSource(frames))
    model.step(10)  # decode only the first ten frames
    assert model.decoded == 10 and len(model) == len(frames)
    quick = model.message(30)
    assert quick is not None and quick.name == "SET_VRING_ENABLE" and quick.payload["num"] == 1
    assert not model.is_decoded(30)


def test_filter_matches_what_the_filter_language_matches() -> None:
    frames = demo_frames()
    for text in (
        "name ~ VRING",
        "reply and latency_us > 30",
        "problems",
        "conn == 2 and fds",
        "channel == backend",
        "kind == open",
    ):
        model = Model(FrameListSource(frames))
        model.set_filter(text)
        model.run_to_end()
        pred = compile_filter(text)
        msgs = list(Pipeline().run(frames))
        want = sorted({m.frame - 1 for m in msgs if pred(m)})
        assert list(model.visible or []) == want, text
        assert len(model) == len(want)


def test_refiltering_after_decoding() -> None:
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    model.set_filter("name == GET_VRING_BASE")
    assert model.filtering
    model.run_to_end()
    assert [model.message(model.row_at(p)).name for p in range(len(model))] == [
        "GET_VRING_BASE"
    ] * 5
    model.set_filter("")
    assert model.visible is None and len(model) == len(model.source)


def test_shown_rows_are_the_rows_of_the_view() -> None:
    """What ``w`` saves with no marks: the view's rows, filtered or not, as row_at gives them."""
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    assert list(model.shown_rows()) == list(range(len(model.source)))
    model.set_filter("conn == 2 and fds")
    model.run_to_end()
    shown = model.shown_rows()
    assert 0 < len(shown) < len(model.source)
    assert list(shown) == [model.row_at(p) for p in range(len(model))]


def test_bad_filter_raises_and_keeps_the_old_one() -> None:
    model = Model(FrameListSource(demo_frames()))
    model.set_filter("conn == 1")
    with pytest.raises(FilterError):
        model.set_filter("conn ==")
    assert model.filter_text == "conn == 1"


def test_request_left_unanswered_gets_its_problem_and_matches_problems_filter() -> None:
    model = Model(FrameListSource(demo_frames()))
    model.set_filter("problems")
    model.run_to_end()
    stalled = 89  # frame 90: GET_VRING_BASE with no reply, before the closing note
    assert "missing_reply" in model.message(stalled).problem_codes
    assert stalled in list(model.visible or [])


@pytest.mark.parametrize("text", ["severity == error", "severity", "problems == missing_reply"])
def test_late_problem_matches_every_name_of_problems(text: str) -> None:
    """``severity`` is read from the problems too: a problem added at the end refilters it."""
    model = Model(FrameListSource(demo_frames()))
    model.set_filter(text)
    model.run_to_end()
    assert 89 in list(model.visible or []), text  # GET_VRING_BASE never answered


def test_pending_flag_until_the_reply() -> None:
    s = Script()
    blk_handshake(s, 1)
    s.request(1, 11, {"index": 0, "num": 0})
    live = LiveSource()
    for f in s.frames:
        live.push(f)
    model = Model(live)
    model.run_to_end()
    last = len(live) - 1
    assert model.pending(last)
    s.frames = []
    s.reply(1, 11, {"index": 0, "num": 5})
    live.push(s.frames[0])
    model.run_to_end()
    assert not model.pending(last)
    assert model.message(last).reply_in == last + 2


def test_live_source_fed_from_a_thread() -> None:
    live = LiveSource()
    model = Model(live)
    changes = threading.Event()
    model.start(on_change=changes.set)
    frames = demo_frames()

    def feed() -> None:
        for f in frames:
            live.push(f)
            time.sleep(0.001)

    t = threading.Thread(target=feed)
    t.start()
    t.join(10)
    deadline = time.monotonic() + 10
    while model.decoded < len(frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert changes.is_set()
    assert model.decoded == len(frames)
    assert not model.finished  # a live feed has not ended
    live.end()
    deadline = time.monotonic() + 5
    while not model.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    model.stop()
    assert model.finished
    assert model_json(model) == pipeline_json(frames)


def test_decoder_thread_sleeps_once_the_input_ended() -> None:
    """After the end, the thread waits for a filter instead of polling an ended source."""
    live = LiveSource()
    model = Model(live)
    model.start()
    for f in demo_frames():
        live.push(f)
    live.end()
    deadline = time.monotonic() + 10
    while not model.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.finished
    try:
        cpu = time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu < 0.15  # a spinning thread would take ~0.5 s
        model.set_filter("name == GET_FEATURES")  # and a filter still wakes it
        deadline = time.monotonic() + 5
        while model.filtering and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not model.filtering and 0 < len(model) < len(demo_frames())
    finally:
        model.stop()


def test_waiting_age_uses_the_clock_live_and_the_capture_end_offline(tmp_path: Path) -> None:
    frames = demo_frames()
    now = [frames[-1].ts_ns + 2_000_000_000]
    live = LiveSource()
    for f in frames:
        live.push(f)
    model = Model(live, clock=lambda: now[0])
    model.run_to_end()
    assert model.now_ns() == now[0]
    offline = Model(FrameListSource(frames))
    assert offline.now_ns() == frames[-1].ts_ns


def test_state_at_a_frame_replays_one_connection() -> None:
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    before = model.state_at(1, 17)  # just before SET_MEM_TABLE (frame 19)
    assert before is not None and before.regions == [] and before.virtio_acked is not None
    at = model.state_at(1, 18)
    assert len(at.regions) == 2
    assert [p.message.frame for p in at.waiting()] == [19]  # capture frame numbers kept
    assert model.state_at(1, 19).waiting() == []
    stalled = model.state_at(2, 89)
    assert [(p.message.name, p.message.frame) for p in stalled.waiting()] == [
        ("GET_VRING_BASE", 90)
    ]
    assert model.state_at(2, 10) is None  # conn 2 had not opened yet


def test_background_index_serves_the_head_first(tmp_path: Path) -> None:
    from vuinspect.tui.samples import write_capture

    frames = list(bulk_frames(5000))
    path = write_capture(tmp_path / "bulk.pcapng", frames)
    source = FileSource(path, background=True)
    assert len(source) >= min(len(frames), FileSource.HEAD_FRAMES)  # usable at once
    assert source.frame(0) == frames[0]
    model = Model(source)
    model.run_to_end()  # waits for the index, then decodes the rest
    assert not source.loading and len(source) == len(frames)
    assert model.finished and model.decoded == len(frames)
    assert model_json(model) == pipeline_json(frames)
    source.close()


def test_background_source_refuses_a_foreign_file_at_once(tmp_path: Path) -> None:
    from vuinspect.capture import CaptureError

    junk = tmp_path / "junk"
    junk.write_bytes(b"not a capture at all\n" * 100)
    with pytest.raises(CaptureError):
        FileSource(junk, background=True)


def test_back_end_channel_close_leaves_main_requests_waiting() -> None:
    from vuinspect.frames import event_frame

    s = Script()
    blk_handshake(s, 1)
    s.request(1, 11, {"index": 0, "num": 0})  # owed a reply on the main channel
    s.frames.append(event_frame("close", s.ts + 1, 1, {"reason": "channel closed"}, "backend"))
    live = LiveSource()  # still running: no end-of-input problems
    for f in s.frames:
        live.push(f)
    model = Model(live)
    model.run_to_end()
    row = len(s.frames) - 2
    session = model.sessions()[0]
    assert session.closed_ns is None and session.backend_channel == "closed"
    assert model.pending(row)  # the main channel still owes GET_VRING_BASE its reply


def test_a_live_view_whose_spool_is_full_gives_no_request_up() -> None:
    """The spool's budget stops the view (a note row), not the proxy: a request still
    waiting is not given a missing_reply its reply may yet answer."""
    s = Script()
    blk_handshake(s, 1)
    s.request(1, 11, {"index": 0, "num": 0})
    live = LiveSource(budget=sum(len(f.data) + 64 for f in s.frames))
    for f in s.frames:
        live.push(f)
    live.push(s.frames[-1])  # past the budget: the view stops here
    model = Model(live)
    model.run_to_end()
    assert model.message(len(live) - 1).kind == "note"
    waiting = len(live) - 2
    assert model.pending(waiting)
    assert "missing_reply" not in {p.code for p in model.message(waiting).problems}
    live.close()
