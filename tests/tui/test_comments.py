"""Frame comments (pcapng opt_comment): shown in the tree, added with ``c``, saved with ``w``.

Also the filtering percentage in the title (issue 12 items 9 and 10, TUI part).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle


async def _until(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


async def test_capture_comment_is_shown_in_the_tree(demo_path: Path) -> None:
    source = FileSource(demo_path)
    plain = source.frame

    def with_comment(row: int):  # the reader's part: opt_comment -> Frame.comment
        frame = plain(row)
        return dataclasses.replace(frame, comment="slow \x1b[2J start") if row == 1 else frame

    source.frame = with_comment  # type: ignore[method-assign]
    app = VuInspectApp(source, poll_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(2)
        await pilot.pause()
        text = screen_text(app)
        assert "Comment: slow \\x1b[2J start" in text
        assert "✎" in text


async def test_c_adds_a_comment_and_w_saves_it(demo_path: Path, tmp_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path), poll_interval=3600)
    out = tmp_path / "commented.pcapng"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(19)
        await pilot.pause()
        await pilot.press("c", *"regions look odd")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert "comment on frame 19:" in lines[-2] and "regions look odd" in lines[-2]
        await pilot.press("enter")
        await pilot.pause()
        assert "Comment: regions look odd" in screen_text(app)
        await pilot.press("m", "w")
        app.query_one("#prompt").value = str(out)  # typing a long path is slow in Pilot
        await pilot.press("enter")
        await _until(pilot, lambda: app.last_saved is not None)
    saved = [f for f in read_frames(out) if f.kind == "data"]
    assert [f.comment for f in saved] == ["regions look odd"]


async def test_filtering_shows_a_percentage(demo_path: Path) -> None:
    app = VuInspectApp(FileSource(demo_path), poll_interval=3600, filter_text="problems")
    async with app.run_test(size=(130, 24)) as pilot:
        await settle(pilot, app)
        m = app.model
        done = m.filtered
        m.filtered = m.decoded // 2  # as if the filter thread were half way
        app._update_title()
        await pilot.pause()
        assert "(filtering 49%)" in screen_text(app).splitlines()[0]
        m.filtered = done


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap not installed")
async def test_editcap_comment_is_shown(demo_path: Path, tmp_path: Path) -> None:
    """A comment written by Wireshark's editcap -a (not by us) shows in the tree."""
    out = tmp_path / "editcap.pcapng"
    subprocess.run(
        ["editcap", "-a", "2:slow start", str(demo_path), str(out)],
        check=True,
        timeout=30,
        capture_output=True,
    )
    app = VuInspectApp(FileSource(out), poll_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        app.jump_to_frame(2)
        await pilot.pause()
        assert "Comment: slow start" in screen_text(app)
