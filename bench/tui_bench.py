"""The TUI on a big capture: time to first paint, to the last row, to a full decode, and RSS.

    python -m bench.tui_bench            # 1M messages
    python -m bench.tui_bench --quick    # 100k messages

The capture is generated (blk handshakes on four connections, then IOTLB and
config traffic, see ``vuinspect.tui.samples.bulk_frames``).  Each measurement
runs the real app headless (``App.run_test``) in a fresh child process, so the
peak RSS is the app's alone.  "First paint" is the first screen that shows
rows; "last row" is pressing End (once the background index is complete) and
seeing the capture's last frame number on screen (rows are painted from the
index before the decoder reaches them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from vuinspect.testing.memory import peak_rss_mb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RSS_LIMIT_MB = 300
FIRST_PAINT_LIMIT_S = 2.0


def generate(path: str, messages: int) -> dict:
    from vuinspect.capture import CaptureWriter
    from vuinspect.tui.samples import bulk_frames

    t = time.perf_counter()
    n = 0
    with CaptureWriter(path) as w:
        for frame in bulk_frames(messages):
            w.write(frame)
            n += 1
    return {
        "frames": n,
        "size_mb": round(os.path.getsize(path) / 1e6, 1),
        "generate_s": round(time.perf_counter() - t, 2),
    }


async def _pages(app, pilot, pages: int) -> float:
    """Mean time for a page down to be handled and the screen repainted, in ms.

    ``pilot.pause()`` is not used: it waits until the whole process is idle,
    which never happens while the decoder thread works (it then waits 1 s).
    """
    app.message_list.action_first()
    await pilot._wait_for_screen()
    t = time.perf_counter()
    for _ in range(pages):
        app.message_list.action_page_down()
        await pilot._wait_for_screen()
        app.screen._on_timer_update()  # the repaint the 60 Hz timer would do
    return round((time.perf_counter() - t) * 1000 / pages, 2)


async def _measure(path: str, pages: int) -> dict:
    """Runs in the child: open, paint, jump to the end, scroll, decode, filter."""
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.screenshots import screen_text
    from vuinspect.tui.sources import FileSource

    out: dict = {}
    t0 = time.perf_counter()
    source = FileSource(path, background=True)  # as `vuinspect view` opens it
    out["open_s"] = round(time.perf_counter() - t0, 3)
    app = VuInspectApp(source)
    async with app.run_test(size=(160, 50)) as pilot:
        while "GET_FEATURES" not in screen_text(app):
            await pilot.pause(0.005)
        out["first_paint_s"] = round(time.perf_counter() - t0, 3)
        out["rss_at_first_paint_mb"] = round(peak_rss_mb(), 1)
        while source.loading:
            await pilot.pause(0.005)
        out["index_done_s"] = round(time.perf_counter() - t0, 3)
        out["frames_indexed"] = len(source)
        last = str(len(source))
        t = time.perf_counter()
        app.message_list.action_last()
        while f" {last} " not in screen_text(app):
            await pilot.pause(0.005)
        out["to_last_row_s"] = round(time.perf_counter() - t, 3)
        out["decoded_when_last_row_shown"] = app.model.decoded
        out["page_down_ms_while_decoding"] = await _pages(app, pilot, pages)
        t = time.perf_counter()
        while not app.model.finished:
            await pilot.pause(0.1)
        out["full_decode_s"] = round(time.perf_counter() - t0, 1)
        out["decode_rate_k_per_s"] = round(len(source) / (time.perf_counter() - t0) / 1000, 1)
        out["page_down_ms_decoded"] = await _pages(app, pilot, pages)
        t = time.perf_counter()
        app.apply_filter("name == GET_CONFIG and latency_us > 9.5")
        while app.model.filtering:
            await pilot.pause(0.1)
        out["filter_all_s"] = round(time.perf_counter() - t, 1)
        out["filter_shown"] = len(app.model)
        t = time.perf_counter()
        app.jump_to_frame(len(source) // 2)
        await pilot.pause()
        out["select_detail_ms"] = round((time.perf_counter() - t) * 1000, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    source.close()
    return out


def measure(path: str, pages: int = 50, timeout: float = 900) -> dict:
    """Run :func:`_measure` in a fresh interpreter and return its JSON."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tui_bench", "--child", path, "--pages", str(pages)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"TUI benchmark child failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    """The entry point ``python -m bench`` calls."""
    import tempfile

    messages = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="vubench-tui.", dir="/tmp") as tmp:
        path = os.path.join(tmp, "big.pcapng")
        result = {"messages_requested": messages, **generate(path, messages)}
        result.update(measure(path))
        from . import termshark_bench

        result["termshark"] = termshark_bench.run(
            path, result["frames"], timeout=120 if quick else 900
        )
    result["first_paint_ok"] = result["first_paint_s"] < FIRST_PAINT_LIMIT_S
    result["rss_ok"] = result["peak_rss_mb"] < RSS_LIMIT_MB
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100k messages instead of 1M")
    p.add_argument("--child", metavar="CAPTURE", help=argparse.SUPPRESS)
    p.add_argument("--pages", type=int, default=50, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.child, args.pages))))
        return 0
    print(json.dumps(run(args.quick), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
