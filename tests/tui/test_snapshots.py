"""Pin the main screens (pytest-textual-snapshot).  Fixed timestamps, fixed sizes, no clock.

Update after a deliberate change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
(look at the report first).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.detail import DetailTree
from vuinspect.tui.sources import FileSource

from .conftest import settle

SIZE = (130, 40)


def app_for(path: Path, **kw: object) -> VuInspectApp:
    # No polling timer in snapshots: settle() repaints once decoding is done.
    return VuInspectApp(FileSource(path), poll_interval=3600, **kw)  # type: ignore[arg-type]


def _select_field(app: VuInspectApp, key: str) -> None:
    tree = app.query_one(DetailTree)
    todo = list(tree.root.children)
    while todo:
        node = todo.pop(0)
        if node.data is not None and node.data.key == key:
            tree.move_cursor(node)
            return
        todo.extend(node.children)
    raise AssertionError(key)


def test_messages_with_field_selected(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.jump_to_frame(19)
        await pilot.pause()
        _select_field(app, "payload.regions.1.memory_size")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filtered_problems(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path, filter_text="problems")

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.jump_to_frame(51)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filter_error_feedback(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("f", *"conn == 2 and latency_us >")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_state_view_stalled_session(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.jump_to_frame(90)
        app.action_view("state")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(130, 60), run_before=run_before)


def test_connections_view(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.action_view("connections")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(150, 16), run_before=run_before)


def test_statistics_view(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.action_view("stats")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(130, 50), run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=["80x24", "60x20"])
def test_help_in_a_small_terminal(snap_compare, demo_path: Path, size: tuple[int, int]) -> None:
    """The help fits inside the screen: text wrapped, closing hint whole, scrolls down."""
    app = app_for(demo_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


# -- inputs being typed into: what you type is on screen, with its cursor -------------------
SMALL = (80, 24)
TINY = (50, 12)  # smaller than a default terminal: the prompt must still show


def _typing(app: VuInspectApp, *keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press(*keys)
        # the completion suggestion arrives from a worker, then as a message to the input
        # (a fixed pause missed it on a loaded machine)
        await app.workers.wait_for_complete()
        await pilot.pause()
        await settle(pilot, app)

    return run_before


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "130x40"])
def test_typing_a_filter(snap_compare, demo_path: Path, size: tuple[int, int]) -> None:
    app = app_for(demo_path)
    assert snap_compare(
        app, terminal_size=size, run_before=_typing(app, "f", *"name == SET_VRING_B")
    )


def test_filter_completion_choices(snap_compare, demo_path: Path) -> None:
    app = app_for(demo_path)
    assert snap_compare(
        app, terminal_size=SMALL, run_before=_typing(app, "f", *"problems == re", "tab")
    )


@pytest.mark.parametrize("size", [TINY, SMALL, SIZE], ids=["50x12", "80x24", "130x40"])
def test_typing_a_search(snap_compare, demo_path: Path, size: tuple[int, int]) -> None:
    app = app_for(demo_path)
    assert snap_compare(app, terminal_size=size, run_before=_typing(app, "slash", *"GET_VRING"))


def test_search_again_offers_the_last_one(snap_compare, demo_path: Path) -> None:
    """``/`` a second time: an empty field, the last search offered (↑ or Enter)."""
    app = app_for(demo_path)
    search = _typing(app, "slash", *"name == GET_VRING_BASE", "enter")

    async def run_before(pilot) -> None:
        await search(pilot)
        app.clear_notifications()  # ("searching ..." times out: not in the picture)
        await pilot.press("slash")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


@pytest.mark.parametrize("size", [SMALL, TINY], ids=["80x24", "50x12"])
def test_search_refusing_a_filter_typo(
    snap_compare, demo_path: Path, size: tuple[int, int]
) -> None:
    """A search shaped like a filter with a typo stays open, red, its error and the
    suggestion just above it (the text is kept for fixing)."""
    app = app_for(demo_path)
    keys = ("slash", *"name == GET_FEATURS", "enter")
    assert snap_compare(app, terminal_size=size, run_before=_typing(app, *keys))


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "130x40"])
def test_typing_a_frame_number(snap_compare, demo_path: Path, size: tuple[int, int]) -> None:
    app = app_for(demo_path)
    assert snap_compare(app, terminal_size=size, run_before=_typing(app, "colon", *"51"))


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "130x40"])
def test_save_prompt_with_its_default(
    snap_compare, demo_path: Path, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")  # the default path is in the current directory
    app = app_for(demo_path)
    assert snap_compare(app, terminal_size=size, run_before=_typing(app, "w", *"-x"))


@pytest.mark.parametrize("size", [TINY, SMALL, SIZE], ids=["50x12", "80x24", "130x40"])
def test_typing_a_frame_comment(snap_compare, demo_path: Path, size: tuple[int, int]) -> None:
    """The comment prompt (c) open and typed into: its question and the text are visible."""
    app = app_for(demo_path)
    assert snap_compare(app, terminal_size=size, run_before=_typing(app, "c", *"lost kick?"))


@pytest.mark.parametrize("size", [(80, 24), (140, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_queues_view(snap_compare, queue_path: Path, size: tuple[int, int]) -> None:
    app = app_for(queue_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("5", "down", "down")  # the stalled vring: its problem under the table
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_queues_in_flight_chains(snap_compare, queue_path: Path) -> None:
    app = app_for(queue_path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("5", "down", "down", "enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def many_queue_frames(conns: int = 24) -> list:
    """Many blk connections (more than 80x24 has rows), one vring each; c9's stops moving."""
    from vuinspect.frames import ring_frame
    from vuinspect.tui.samples import Script, blk_handshake

    s = Script()
    for conn in range(1, conns + 1):
        blk_handshake(s, conn, f"/run/vhost/blk{conn - 1}.sock", queues=1)
    t0 = s.ts + 1_000_000
    for step in range(21):  # 0.0 .. 2.0 s, every 100 ms
        for conn in range(1, conns + 1):
            used = 4 * step if conn != 9 or step < 5 else 20
            sample = {"vring": 0, "ts_ns": t0 + step * 100_000_000, "layout": "split"}
            sample |= {"num": 256, "ok": True, "avail_idx": used + (2 if conn == 9 else 0)}
            sample |= {"used_idx": used, "avail_flags": 0, "used_flags": 0, "problems": []}
            sample["in_flight"] = sample["avail_idx"] - used
            s.frames.append(ring_frame(sample["ts_ns"] + conn, conn, sample))
    return s.frames


@pytest.mark.parametrize("keys", [(), ("pagedown", "pagedown")], ids=["top", "paged"])
def test_queues_with_many_connections(snap_compare, tmp_path: Path, keys: tuple[str, ...]) -> None:
    """At 80x24 the table scrolls under its hint; the selected row's line stays below it."""
    from vuinspect.tui.samples import write_capture

    path = Path(write_capture(tmp_path / "many.pcapng", many_queue_frames()))
    app = app_for(path)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("5", *keys)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)
