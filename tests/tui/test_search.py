"""tui/search.py without Textual: a filter or a plain text search over the model's rows,
forward and back with wrap-around, cancellable; saving rows keeps their connection events."""

from __future__ import annotations

import threading

from vuinspect.capture import read_frames
from vuinspect.tui.model import Model
from vuinspect.tui.samples import demo_frames
from vuinspect.tui.search import matcher, save_rows, search
from vuinspect.tui.sources import FrameListSource


def decoded_model() -> Model:
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    return model


def names(model: Model, pos: int) -> str:
    return model.messages(model.row_at(pos))[0].name


def test_a_filter_text_matches_as_a_filter_anything_else_as_text():
    model = decoded_model()
    msgs = model.messages(model.row_at(1))  # GET_FEATURES
    by_filter, how = matcher("name == GET_FEATURES")
    assert how == "filter" and by_filter(msgs)
    by_text, how = matcher("Get_Feat")  # not a filter: case-insensitive in the summary line
    assert how == "text" and by_text(msgs)
    assert not matcher("name == SET_OWNER")[0](msgs) and not matcher("zzz")[0](msgs)
    assert matcher("payload.num > 3")[0](msgs) is False  # no such value: no match, no error


def test_search_forward_back_and_wrapping():
    model = decoded_model()
    hits = [p for p in range(len(model)) if names(model, p) == "GET_VRING_BASE"]
    assert len(hits) >= 2
    pos, wrapped = search(model, "name == GET_VRING_BASE", 0)
    assert (pos, wrapped) == (hits[0], False)
    pos, wrapped = search(model, "name == GET_VRING_BASE", hits[0])
    assert (pos, wrapped) == (hits[1], False)
    pos, wrapped = search(model, "name == GET_VRING_BASE", hits[-1])
    assert (pos, wrapped) == (hits[0], True)
    pos, wrapped = search(model, "name == GET_VRING_BASE", hits[0], forward=False)
    assert (pos, wrapped) == (hits[-1], True)
    assert search(model, "no such text anywhere", 0) == (None, False)
    stop = threading.Event()
    stop.set()
    assert search(model, "name == GET_VRING_BASE", 0, cancel=stop) == (None, False)
    assert search(Model(FrameListSource([])), "x", 0) == (None, False)


def test_saved_rows_keep_their_connections_events_and_comments(tmp_path):
    model = decoded_model()
    row = model.row_at(search(model, "name == GET_VRING_BASE", 0)[0])
    conn = model.frame(row).conn
    model.comments[row] = "look here"
    path = tmp_path / "saved.pcapng"
    count = save_rows(model, [row, row], str(path))
    frames = list(read_frames(str(path)))
    assert count == len(frames) == 3
    assert [(f.kind, f.conn) for f in frames] == [("open", conn), ("data", conn), ("close", conn)]
    (data,) = [f for f in frames if f.kind == "data"]
    assert data.data == model.frame(row).data and data.comment == "look here"
