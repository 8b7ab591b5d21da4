"""Write SVG screenshots of the main screens for the docs: ``python -m vuinspect.tui.screenshots``.

Uses the deterministic demo capture (fixed timestamps), or ``--capture FILE``
(e.g. ``captures/blk.pcapng``).  ``--text`` also writes a plain-text copy of
each screen, handy for reviewing a change without an SVG viewer.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
from collections.abc import Awaitable, Callable

from rich.console import Console
from textual.pilot import Pilot

from .app import VuInspectApp
from .detail import DetailTree
from .samples import demo_frames, queue_frames, write_capture
from .sources import FileSource

Step = Callable[[VuInspectApp, Pilot], Awaitable[None]]


def screen_text(app: VuInspectApp) -> str:
    """The current screen as plain text."""
    w, h = app.size
    console = Console(
        width=w,
        height=h,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


async def _settle(app: VuInspectApp, pilot: Pilot) -> None:
    while not app.model.finished or app.model.filtering:
        await pilot.pause(0.02)
    app.poll()
    await pilot.pause()


def _select_field(app: VuInspectApp, key: str) -> None:
    tree = app.query_one(DetailTree)
    todo = list(tree.root.children)
    while todo:
        node = todo.pop(0)
        if node.data is not None and node.data.key == key:
            tree.move_cursor(node)
            return
        todo.extend(node.children)


async def _messages(app: VuInspectApp, pilot: Pilot) -> None:
    app.jump_to_frame(19)
    await pilot.pause()
    _select_field(app, "payload.regions.1.memory_size")
    await pilot.pause()


async def _filtered(app: VuInspectApp, pilot: Pilot) -> None:
    app.apply_filter("problems or name == GET_VRING_BASE")
    await _settle(app, pilot)
    app.jump_to_frame(51)
    await pilot.pause()
    # typing more: the bar completes the name being typed (Tab accepts)
    await pilot.press("f", "end", *" and conn == 2 and lat")
    await pilot.pause(0.2)


async def _state(app: VuInspectApp, pilot: Pilot) -> None:
    app.jump_to_frame(90)
    app.action_view("state")
    await pilot.pause()


async def _view(name: str) -> Step:
    async def step(app: VuInspectApp, pilot: Pilot) -> None:
        app.action_view(name)
        await pilot.pause()

    return step


async def _queues(app: VuInspectApp, pilot: Pilot) -> None:
    await pilot.press("5", "down", "down")
    await pilot.pause()


async def _help(app: VuInspectApp, pilot: Pilot) -> None:
    await pilot.press("question_mark")
    await pilot.pause()


async def _screens() -> list[tuple[str, Step, tuple[int, int]]]:
    return [
        ("messages", _messages, (140, 42)),
        ("filter", _filtered, (140, 30)),
        ("state", _state, (140, 62)),
        ("connections", await _view("connections"), (150, 12)),
        ("statistics", await _view("stats"), (140, 30)),
        ("help", _help, (140, 50)),
        ("queues", _queues, (150, 11)),
    ]


#: Screens shown on a capture of their own (the demo capture has no ring frames).
OWN_CAPTURE = {"queues": queue_frames}


async def shoot(
    path: str, out_dir: str, text: bool = False, own: dict[str, str] | None = None
) -> list[str]:
    """Write one SVG per screen into ``out_dir``; returns the files written.

    ``own`` maps a screen to the capture it shows instead of ``path``.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, step, size in await _screens():
        app = VuInspectApp(FileSource((own or {}).get(name, path)), poll_interval=3600)
        async with app.run_test(size=size) as pilot:
            await _settle(app, pilot)
            await step(app, pilot)
            target = os.path.join(out_dir, f"{name}.svg")
            app.save_screenshot(filename=f"{name}.svg", path=out_dir)
            written.append(target)
            if text:
                with open(os.path.join(out_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
                    f.write(screen_text(app))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vuinspect.tui.screenshots", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", default="docs/screenshots", help="output directory")
    p.add_argument("--capture", help="capture to show (default: the built-in demo)")
    p.add_argument("--text", action="store_true", help="also write .txt copies")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.capture or write_capture(os.path.join(tmp, "demo.pcapng"), demo_frames())
        own = (
            {}
            if args.capture
            else {
                name: write_capture(os.path.join(tmp, f"{name}.pcapng"), frames())
                for name, frames in OWN_CAPTURE.items()
            }
        )
        for f in asyncio.run(shoot(path, args.out, args.text, own)):
            print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
