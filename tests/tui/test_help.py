"""The ``?`` help fits the terminal: every line whole, the closing hint in sight.

New-user walkthrough: at 80x24 the 90-column box cut its text off ("(End resumes
follow m") and its closing hint ("Esc or ? closes,"), with no sideways scroll.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.containers import VerticalScroll

from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.help import KEYS, HelpScreen
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle

HINT = "Esc or ? closes, q quits"
SIZES = [(80, 24), (60, 20), (130, 50)]


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_help_fits_and_shows_every_word(demo_path: Path, size: tuple[int, int]) -> None:
    app = VuInspectApp(FileSource(demo_path), poll_interval=3600)  # type: ignore[arg-type]
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one(VerticalScroll)
        width, height = size
        assert box.region.x >= 1 and box.region.right <= width - 1, box.region
        assert box.region.y >= 0 and box.region.bottom <= height, box.region
        assert box.max_scroll_x == 0  # nothing hidden sideways
        shown = screen_text(app)
        assert HINT in shown, shown  # the closing hint, whole
        # every word of the help is on screen once scrolled to (wrapped, never cut)
        seen: list[str] = []
        while True:
            seen.extend(_words(screen_text(app)))
            if box.scroll_y >= box.max_scroll_y:
                break
            box.scroll_page_down(animate=False)
            await pilot.pause()
        for group, keys in KEYS:
            for word in _words(group) + [w for k, t in keys for w in _words(k + " " + t)]:
                assert word in seen, (word, size)
        box.scroll_home(animate=False)
        await pilot.press("pagedown", "down")  # the keys scroll it (it has the focus)
        await pilot.pause()
        assert box.scroll_y > 0 or box.max_scroll_y == 0
        await pilot.press("question_mark")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
