"""What you type stays in the box you type it into, is seen while typing, and q quits.

Issue 12 item 1: the filter box showed only its borders, the prompts hid under
the footer, Tab left the filter box (the rest of the text then ran as
commands), and Esc+q after the help screen did not quit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.complete import complete
from vuinspect.tui.filter_bar import FilterBar, FilterInput
from vuinspect.tui.prompt import PromptInput
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle


def app_for(path: Path, **kw: object) -> VuInspectApp:
    return VuInspectApp(FileSource(path), poll_interval=3600, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(80, 24), (130, 40)])
async def test_typed_filter_is_on_screen(demo_path: Path, size: tuple[int, int]) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("f", *"problems")
        await pilot.pause()
        assert isinstance(app.focused, FilterInput)
        lines = screen_text(app).splitlines()
        assert lines[1].strip() == "problems", lines[:3]
        assert app.query_one(FilterInput).content_region.height == 1


@pytest.mark.parametrize(
    ("keys", "label", "typed"),
    [
        (("slash",), "/ search:", "SET_MEM"),
        (("colon",), ": go to frame:", "42"),
        (("w",), "save 91 frames in view to:", "x"),
    ],
)
async def test_prompts_are_above_the_footer(
    demo_path: Path, keys: tuple[str, ...], label: str, typed: str
) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press(*keys, *typed)
        await pilot.pause()
        lines = screen_text(app).splitlines()
        prompt_line = lines[-2]  # the footer is the last row
        assert label in prompt_line and typed in prompt_line, lines[-3:]


@pytest.mark.parametrize("size", [(50, 12), (40, 10)], ids=["50x12", "40x10"])
@pytest.mark.parametrize(
    ("keys", "label", "typed"),
    [
        (("slash",), "/ search:", "SET_MEM"),
        (("colon",), ": go to frame:", "42"),
        (("w",), "save 91 frames", "g-mine"),  # the default path's end, then what is typed
        (("c",), "comment on frame 91:", "lost kick?"),
    ],
    ids=["search", "goto", "save", "comment"],
)
async def test_prompts_in_a_small_terminal(
    demo_path: Path, size: tuple[int, int], keys: tuple[str, ...], label: str, typed: str
) -> None:
    """Below 80x24 a prompt still shows its question and what is typed, above the footer,
    and the selected row (the last one) stays in sight above it."""
    app = app_for(demo_path)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("end")
        await pilot.press(*keys, *typed.replace("g-mine", "-mine"))
        await pilot.pause()
        assert isinstance(app.focused, PromptInput)
        lines = screen_text(app).splitlines()
        assert len(lines) == size[1]
        assert label in lines[-2] and typed in lines[-2], lines[-3:]
        assert any(line.lstrip().startswith("91 ") for line in lines[:-2]), lines


async def test_save_prompt_shows_the_default_path(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("w")
        await pilot.pause()
        assert "demo-view.pcapng" in screen_text(app).splitlines()[-2]


async def test_tab_in_the_filter_completes_and_never_leaks(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f", *"na", "tab", *"== SET_MEM_TA", "tab", "shift+tab", *"m3 q")
        await pilot.pause()
        bar = app.query_one(FilterBar)
        assert bar.input.value == "name == SET_MEM_TABLE m3 q"
        assert isinstance(app.focused, FilterInput)
        assert app.is_running
        assert app.view == "messages" and not app.message_list.marks
        assert bar.has_class("-invalid")  # and the error line is on screen
        assert "unexpected" in screen_text(app)


async def test_tab_in_a_prompt_stays_there(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", "tab", *"m3q")
        await pilot.pause()
        assert app.prompt_mode == "search"
        assert app.query_one("#prompt").value == "m3q"
        assert not app.message_list.marks and app.view == "messages" and app.is_running


async def test_filter_completion_offers_choices(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f", *"problems == re", "tab")
        await pilot.pause()
        text = screen_text(app)
        assert "reply_flags" in text and "reserved_flags" in text
        lines = text.splitlines()  # the caret stays under 're' (the status is never wrapped)
        assert lines[2].index("^") == lines[1].index("problems") + len("problems == ")
        assert complete("conn == 2 and need")[0] == "conn == 2 and need_reply "


async def test_invalid_filter_is_red_with_its_error(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f", *"conn ==")
        await pilot.pause()
        bar = app.query_one(FilterBar)
        assert bar.has_class("-invalid") and bar.error is not None
        assert bar.error.message in screen_text(app)
        await pilot.press("enter")  # refused: stays in the box
        assert isinstance(app.focused, FilterInput)


@pytest.mark.parametrize(
    "keys",
    [
        ("enter", "question_mark", "escape", "q"),
        ("enter", "question_mark", "alt+q"),  # Esc then q typed fast in a real terminal
        ("enter", "question_mark", "q"),
        ("f", *"conn", "escape", "q"),
        ("slash", *"x", "escape", "q"),
        ("3", "q"),
        ("2", "q"),
        ("enter", "enter", "q"),
    ],
)
async def test_q_quits_from_any_state_without_an_open_input(
    demo_path: Path, keys: tuple[str, ...]
) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for k in keys:
            await pilot.press(k)
            await pilot.pause()
        assert not app.is_running, (keys, app.focused)


async def test_q_types_into_an_open_input(demo_path: Path) -> None:
    app = app_for(demo_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f", "q")
        assert app.is_running and app.query_one(FilterBar).input.value == "q"
        await pilot.press("escape", "colon", "q")
        assert app.is_running and app.query_one("#prompt").value == "q"
