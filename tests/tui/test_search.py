"""tui/search.py without Textual: a filter or a plain text search over the model's rows,
forward and back with wrap-around, cancellable; saving rows keeps their connection events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.model import Model
from vuinspect.tui.prompt import PromptInput
from vuinspect.tui.samples import demo_frames
from vuinspect.tui.search import matcher, save_rows, search
from vuinspect.tui.sources import FileSource, FrameListSource

from .conftest import screen_text, settle, until


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


# -- the / prompt, typed into with real keys ---------------------------------------------------


def _app(path: Path) -> VuInspectApp:
    return VuInspectApp(FileSource(path), poll_interval=3600)  # type: ignore[arg-type]


def _selected(app: VuInspectApp) -> str:
    return names(app.model, app.message_list.cursor)


def _notes(app: VuInspectApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_filter_typo_in_search_says_did_you_mean(demo_path: Path) -> None:
    """``/ name == GET_FEATURS`` is a mistyped filter, not text to look for: the prompt
    stays open, red, with the filter bar's own suggestion (walkthrough: it silently
    searched the text and said "not found")."""
    app = _app(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", *"name == GET_FEATURS", "enter")
        await pilot.pause()
        assert app.prompt_mode == "search"  # still open, the text kept for fixing
        assert isinstance(app.focused, PromptInput)
        assert app.focused.value == "name == GET_FEATURS"
        assert app.prompt.has_class("-invalid")
        assert not any(n.startswith("searching") for n in _notes(app)), _notes(app)
        lines = screen_text(app).splitlines()
        assert "did you mean GET_FEATURES?" in lines[-3], lines[-4:]  # just above the prompt
        assert "/ search: name == GET_FEATURS" in lines[-2], lines[-4:]
        # fixing it searches as a filter, and the red goes
        await pilot.press("left")
        assert app.prompt.has_class("-invalid")  # moving is no edit
        await pilot.press("E")
        assert not app.prompt.has_class("-invalid")
        await pilot.press("enter")
        await pilot.pause()
        assert app.prompt_mode is None and app.search_text == "name == GET_FEATURES"
        assert "searching (filter): name == GET_FEATURES" in _notes(app)
        assert "did you mean" not in screen_text(app)
        await until(pilot, lambda: _selected(app) == "GET_FEATURES", "the match selected")


@pytest.mark.parametrize("text", ["GET_FEATURS", "kick -> call", "SET_MEM TABLE"])
async def test_plain_words_stay_a_text_search(demo_path: Path, text: str) -> None:
    app = _app(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", *text, "enter")
        await pilot.pause()
        assert app.prompt_mode is None
        assert f"searching (text): {text}" in _notes(app)


async def test_slash_again_replaces_the_last_search_and_recalls_it(demo_path: Path) -> None:
    """As in less and vim: ``/`` opens empty (typing never appends to the last search),
    ↑ recalls earlier searches, Enter on the empty field and ``n`` repeat the last one."""
    app = _app(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", *"name == GET_VRING_BASE", "enter")
        await pilot.pause()
        await until(pilot, lambda: app.message_list.cursor > 0, "the first match")
        first = app.message_list.cursor
        await pilot.press("slash", *"name == GET_FEATURES")
        await pilot.pause()
        assert app.focused.value == "name == GET_FEATURES"  # type: ignore[union-attr]
        assert "GET_VRING_BASEname" not in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert app.search_text == "name == GET_FEATURES"
        await until(pilot, lambda: _selected(app) == "GET_FEATURES", "GET_FEATURES selected")
        # ↑ walks back through the searches, ↓ forward again, to the empty field
        await pilot.press("slash")
        await pilot.pause()
        prompt = app.query_one(PromptInput)
        assert prompt.value == ""
        assert "name == GET_FEATURES" in screen_text(app).splitlines()[-2]  # offered
        await pilot.press("up")
        assert prompt.value == "name == GET_FEATURES"
        await pilot.press("up")
        assert prompt.value == "name == GET_VRING_BASE"
        await pilot.press("up")
        assert prompt.value == "name == GET_VRING_BASE"
        await pilot.press("down", "down")
        assert prompt.value == ""
        await pilot.press("up", "up", "enter")  # a recalled search, run again
        await pilot.pause()
        assert app.search_text == "name == GET_VRING_BASE"
        await until(pilot, lambda: _selected(app) == "GET_VRING_BASE", "GET_VRING_BASE again")
        first = app.message_list.cursor
        # n repeats it; / then Enter on the empty field repeats it too
        await pilot.press("n")
        await until(pilot, lambda: app.message_list.cursor != first, "the next match")
        assert _selected(app) == "GET_VRING_BASE"
        second = app.message_list.cursor
        await pilot.press("slash", "enter")
        await until(pilot, lambda: app.message_list.cursor != second, "the match after")
        assert _selected(app) == "GET_VRING_BASE"
        assert app.search_text == "name == GET_VRING_BASE"
