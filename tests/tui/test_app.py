"""Drive the app with Pilot over a capture: select, tree + hex, filter, search, jump, views."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.numtext import number_text
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.detail import DetailTree, NodeRef
from vuinspect.tui.filter_bar import FilterBar
from vuinspect.tui.sources import FileSource

from .conftest import REAL_CAPTURES, screen_text, settle

SIZE = (140, 44)


def read_json(path: Path, *extra: str) -> list[dict]:
    """What ``vuinspect read --json`` prints (the real CLI, in a subprocess)."""
    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", *extra, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def tree_nodes(tree: DetailTree) -> dict[str, str]:
    """key -> label of every node of the detail tree."""
    out: dict[str, str] = {}
    todo = list(tree.root.children)
    while todo:
        node = todo.pop()
        ref = node.data
        if isinstance(ref, NodeRef) and ref.key not in out:
            out[ref.key] = str(node.label)
        todo.extend(node.children)
    return out


def flatten(obj: object, path: str) -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{path}.{k}"))
        return out
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{path}.{i}"))
        return out
    return {path: obj}


async def test_selected_message_tree_and_hex_match_read_json(demo_path: Path) -> None:
    want = next(j for j in read_json(demo_path) if j["frame"] == 19)
    raw = list(read_frames(demo_path))[18].data
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.jump_to_frame(19)
        await pilot.pause()
        assert app.message_list.selected_row == 18
        nodes = tree_nodes(app.detail)
        assert want["name"] == "SET_MEM_TABLE"
        for key, value in flatten(want["payload"], "payload").items():
            assert key in nodes, key
            shown = value
            if isinstance(value, int) and not isinstance(value, bool):  # hex or decimal, one rule
                shown = number_text(key, value, want["layout"])
                assert int(shown, 0) == value
            assert nodes[key].startswith(f"{key.rsplit('.', 1)[-1]}: {shown}"), (key, nodes[key])
        for i, fd in enumerate(want["fds"]):
            assert nodes[f"fds.{i}"] == f"[{i}] {fd}"
        assert nodes["reply_in"].startswith(f"Reply in frame {want['reply_in']}")
        assert app.hex.data == raw  # the pane shows the message's bytes
        # select a field: the hex pane highlights exactly its bytes
        tree = app.detail
        node = next(
            n for n in _walk(tree) if n.data and n.data.key == "payload.regions.1.memory_size"
        )
        tree.move_cursor(node)
        await pilot.pause()
        lo, hi = app.hex.highlight
        assert struct.unpack("<Q", raw[lo:hi])[0] == want["payload"]["regions"][1]["memory_size"]
        node = next(n for n in _walk(tree) if n.data and n.data.key == "flags")
        tree.move_cursor(node)
        await pilot.pause()
        assert app.hex.highlight == (4, 8)
        assert struct.unpack("<I", raw[4:8])[0] == want["flags"]


def _walk(tree: DetailTree):
    todo = list(tree.root.children)
    while todo:
        node = todo.pop(0)
        yield node
        todo.extend(node.children)


async def test_keys_move_and_enter_reaches_the_tree(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("j", "j", "down")
        assert app.message_list.selected_row == 3
        await pilot.press("k")
        assert app.message_list.selected_row == 2
        await pilot.press("G")
        assert app.message_list.selected_row == len(app.model.source) - 1
        await pilot.press("g")
        assert app.message_list.selected_row == 0
        await pilot.press("enter")
        assert app.focused is app.detail
        await pilot.press("tab")
        assert app.focused is not app.detail


async def test_filter_bar_applies_and_flags_bad_input(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("f")
        bar = app.query_one(FilterBar)
        assert app.focused is bar.input
        await pilot.press(*"conn ==")
        assert bar.has_class("-invalid")
        assert "expected a value" in screen_text(app)
        await pilot.press("enter")  # refused: the old (empty) filter stays
        assert app.model.visible is None
        for _ in range(7):
            await pilot.press("backspace")
        await pilot.press(*"name ~ queue")  # 'q' types, it does not quit
        assert bar.input.value == "name ~ queue"
        assert bar.has_class("-valid")
        await pilot.press("enter")
        await settle(pilot, app)
        frames = sorted({j["frame"] for j in read_json(demo_path, "--filter", "name ~ queue")})
        assert [app.model.row_at(p) + 1 for p in range(len(app.model))] == frames
        text = screen_text(app)
        assert "GET_QUEUE_NUM" in text and "SET_MEM_TABLE" not in text.split("──")[0]
        assert app.focused is app.message_list


async def test_search_text_and_filter_expressions(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", *"set_mem_table", "enter")
        await _until(pilot, lambda: app.message_list.selected_row == 18)
        await pilot.press("n")
        await _until(pilot, lambda: app.message_list.selected_row == 19)  # its reply
        await pilot.press("n")
        await _until(pilot, lambda: app.message_list.selected_row == 71)  # conn 2
        await pilot.press("N")
        await _until(pilot, lambda: app.message_list.selected_row == 19)
        app.search_text = "name == GET_VRING_BASE and conn == 2 and not reply"
        app.start_search(forward=True)
        await _until(pilot, lambda: app.message_list.selected_row == 89)


async def _until(pilot, cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached")


async def test_jump_to_reply_and_back_and_goto(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("colon", *"19", "enter")
        assert app.message_list.selected_row == 18
        await pilot.press("r")
        assert app.message_list.selected_row == 19
        assert app.model.message(19).reply_to == 19
        await pilot.press("r")
        assert app.message_list.selected_row == 18
        # the tree's "Reply in frame" row jumps too (the tree follows once the cursor rests)
        await pilot.pause(0.2)
        tree = app.detail
        node = next(n for n in _walk(tree) if n.data and n.data.key == "reply_in")
        tree.focus()
        tree.move_cursor(node)
        await pilot.press("enter")
        assert app.message_list.selected_row == 19


async def test_views_and_state_of_the_stalled_session(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=(140, 60)) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(90)
        await pilot.press("2")
        text = screen_text(app)
        assert "Connection 2: /run/vhost/blk1.sock" in text
        assert "Memory table (2 regions" in text
        assert "0x7f00000c0000" in text  # region 1's userspace address
        assert "Waiting: requests still owed a reply" in text
        waiting = next(line for line in text.splitlines() if "GET_VRING_BASE" in line)
        assert "front-end" in waiting and "back-end" in waiting
        await pilot.press("3")
        text = screen_text(app)
        assert "/run/vhost/blk0.sock" in text and "/run/vhost/blk1.sock" in text
        assert "back-end: GET_VRING_BASE" in text
        await pilot.press("4")
        text = screen_text(app)
        assert "SET_MEM_TABLE" in text and "310µs" in text
        await pilot.press("1")
        assert app.focused is app.message_list


async def test_state_view_of_a_real_blk_session() -> None:
    path = REAL_CAPTURES / "blk.pcapng"
    if not path.exists():
        pytest.skip("captures/blk.pcapng not recorded")
    app = VuInspectApp(FileSource(path))
    async with app.run_test(size=(160, 80)) as pilot:
        await settle(pilot, app)
        await pilot.press("2")
        text = screen_text(app)
        session = app.model.sessions()[0]
        assert session.regions and session.vrings
        assert f"Memory table ({len(session.regions)} regions" in text
        for r in session.regions:
            assert f"0x{r.userspace_addr:x}" in text
        assert "Vrings" in text
        for idx, ring in session.vrings.items():
            line = next(
                x
                for x in text.splitlines()
                if x.strip().startswith(f"{idx} ") and f"0x{ring.desc:x}" in x
            )
            assert str(ring.num) in line
        assert f"Back-end channel: {session.backend_channel}" in text


async def test_marks_and_save_marked_frames(demo_path: Path, tmp_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(19)
        await pilot.press("m")
        app.jump_to_frame(72)
        await pilot.press("m")
        assert app.message_list.marks == {18, 71}
        await pilot.press("apostrophe")
        assert app.message_list.selected_row == 18
        await pilot.press("apostrophe")
        assert app.message_list.selected_row == 71
        await pilot.press("w")
        out = tmp_path / "marked.pcapng"
        prompt = app.query_one("#prompt")
        prompt.value = str(out)
        await pilot.press("enter")
        await _until(pilot, lambda: app.last_saved is not None)
    frames = list(read_frames(out))
    assert [(f.kind, f.conn) for f in frames] == [
        ("open", 1),
        ("data", 1),
        ("close", 1),
        ("open", 2),
        ("data", 2),
    ]
    assert frames[1].data == list(read_frames(demo_path))[18].data


async def test_save_filtered_view(demo_path: Path, tmp_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path), filter_text="channel == backend")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert len(app.model) == 4
        app.save(str(tmp_path / "view.pcapng"))
        await _until(pilot, lambda: app.last_saved is not None)
    names = [j["name"] for j in read_json(tmp_path / "view.pcapng")]
    assert names.count("BACKEND_CONFIG_CHANGE_MSG") == 4
    assert names.count("OPEN") == 2


async def test_time_modes_help_and_palette(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert "16:00:00.000020" in screen_text(app)
        await pilot.press("t")
        text = screen_text(app)
        assert "Time (s)" in text and "0.000020" in text
        await pilot.press("t")
        assert "Δt (s)" in screen_text(app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert "vuinspect keys" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert "vuinspect keys" not in screen_text(app)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"problems only")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot, app)
        assert app.model.filter_text == "problems"
        assert [app.model.row_at(p) + 1 for p in range(len(app.model))] == [51, 90]


async def test_initial_filter_and_undecoded_rows_paint(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path), filter_text="conn == 2 and reply")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert all(app.model.message(app.model.row_at(p)).reply for p in range(len(app.model)))
        assert app.query_one(FilterBar).input.value == "conn == 2 and reply"


async def test_state_at_the_selected_frame(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path))
    async with app.run_test(size=(140, 60)) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(19)  # SET_MEM_TABLE of conn 1, its reply not yet in
        await pilot.press("2")
        assert "State now, after frame 91" in screen_text(app)
        await pilot.press("a")
        await _until(
            pilot,
            lambda: "State at frame 19" in screen_text(app) and "replaying" not in screen_text(app),
        )
        text = screen_text(app)
        line = next(x for x in text.splitlines() if "SET_MEM_TABLE" in x)
        assert "back-end" in line  # at that moment the back-end owed the reply
        assert "Memory table (2 regions" in text
        assert "Vrings: none set up yet" in text
        await pilot.press("a")
        assert "State now" in screen_text(app)


async def test_damaged_capture_shows_what_is_left(demo_path: Path, tmp_path: Path) -> None:
    data = demo_path.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-30])  # the last block is cut short
    app = VuInspectApp(FileSource(cut))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert len(app.model.source) == 90  # every whole frame before the damage
        assert "damaged:" in screen_text(app)


async def test_end_reaches_the_last_frame_of_a_capture_indexed_in_the_background(
    tmp_path: Path,
) -> None:
    from vuinspect.tui.samples import bulk_frames, write_capture

    path = write_capture(tmp_path / "bulk.pcapng", list(bulk_frames(6000)))
    source = FileSource(path, background=True)
    app = VuInspectApp(source, poll_interval=3600)  # no poll: End alone must pick up the size
    async with app.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: not source.loading)
        await pilot.press("G")
        last = len(source)
        assert last > FileSource.HEAD_FRAMES
        assert app.message_list.selected_row == last - 1
        assert f" {last} " in screen_text(app)
    source.close()
