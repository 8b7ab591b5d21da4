"""The live TUI's memory is bounded by the capture index, not by how long the proxy ran.

Frames pushed live are spooled to a capture file and read back through its
index (``LiveSource``), as ``vuinspect view`` reads a file.  The test feeds
twice as many frames live as an offline capture holds, each in a fresh
interpreter (so peak RSS is the run's own), and checks the live peak stays
under the offline one.  A synthetic stream (``bulk_frames``) goes straight
into ``LiveSource.push`` from a thread while the model decodes, as the
proxy's feed thread does.  By default 200k live frames against a 100k-frame
capture; ``VUINSPECT_RELIABILITY=full`` runs 2M against the 1M of
bench/tui_bench.py (several minutes).  Seen (2 loaded vCPUs): default live
58 MB < offline 64 MB; full live 134 MB < offline 201 MB (the bench's app on
1M: 216 MB); the old in-memory live source: 78.5 MB for 120k frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from vuinspect.testing.memory import peak_rss_mb

FULL = os.environ.get("VUINSPECT_RELIABILITY") == "full"
OFFLINE_FRAMES = 1_000_000 if FULL else 100_000  # below ~100k the decode cache filling up dominates
LIVE_FRAMES = 2 * OFFLINE_FRAMES
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _finish(model) -> None:
    while not model.finished:
        if not model.step(50_000):
            model.source.wait(model.decoded, 0.05)


def _offline(path: str) -> dict:
    """The TUI's model over a capture file, opened as ``vuinspect view`` opens it."""
    from vuinspect.tui.model import Model
    from vuinspect.tui.sources import FileSource

    t = time.perf_counter()
    source = FileSource(path, background=True)
    model = Model(source)
    _finish(model)
    out = {"frames": len(source), "decoded": model.decoded, "s": time.perf_counter() - t}
    out["peak_rss_mb"] = peak_rss_mb()
    source.close()
    return out


def _live(frames: int) -> dict:
    """The TUI's model over a live source fed ``frames`` frames as fast as it takes them."""
    from vuinspect.tui.model import Model
    from vuinspect.tui.samples import bulk_frames
    from vuinspect.tui.sources import LiveSource

    t = time.perf_counter()
    source = LiveSource("synthetic feed")
    model = Model(source)

    pushed = [0]

    def feed() -> None:
        for frame in bulk_frames(frames):
            source.push(frame)
            pushed[0] += 1
        source.end()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    _finish(model)
    feeder.join()
    last = model.message(len(source) - 1)
    out = {
        "pushed": pushed[0],
        "frames": len(source),
        "decoded": model.decoded,
        "s": time.perf_counter() - t,
        "last": last.name if last is not None else None,
        "pending_rows": sum(model.pending(r) for r in range(0, len(source), 97)),
    }
    out["peak_rss_mb"] = peak_rss_mb()
    source.close()
    return out


def _catch_up(frames: int) -> dict:
    """Push ``frames`` with nobody reading, then index them all at once (a feed far
    ahead of the decoder): the scan must not leave the file resident."""
    from vuinspect.tui.samples import bulk_frames
    from vuinspect.tui.sources import LiveSource

    source = LiveSource()
    for frame in bulk_frames(frames):
        source.push(frame)
    before = peak_rss_mb()
    n = len(source)
    out = {"frames": n, "grew_mb": peak_rss_mb() - before, "file_mb": source.index.size / 1e6}
    source.close()
    return out


def _child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800 if FULL else 300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(3600 if FULL else 400)
def test_live_memory_stays_under_the_offline_figure(tmp_path, record_property) -> None:
    from vuinspect.capture import CaptureWriter
    from vuinspect.tui.samples import bulk_frames

    path = str(tmp_path / "offline.pcapng")
    with CaptureWriter(path) as w:
        for frame in bulk_frames(OFFLINE_FRAMES):
            w.write(frame)
    offline = _child("offline", path)
    live = _child("live", str(LIVE_FRAMES))
    record_property("live_memory", json.dumps({"offline": offline, "live": live}))
    print(f"offline {offline}\nlive {live}")
    assert offline["frames"] == offline["decoded"] >= OFFLINE_FRAMES
    assert live["frames"] == live["decoded"] == live["pushed"] >= LIVE_FRAMES  # each one a row
    assert live["last"]  # the last row reads back from the spool
    assert live["pending_rows"] == 0  # the feed ended: nothing is owed any more
    assert live["peak_rss_mb"] < offline["peak_rss_mb"], (live, offline)


def test_a_feed_far_ahead_of_the_decoder_is_not_made_resident() -> None:
    got = _child("catch_up", "300000")
    assert got["frames"] >= 300_000 and got["file_mb"] > 30
    assert got["grew_mb"] < got["file_mb"] / 4, got  # the index (8 bytes a frame), not the file


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    run = {
        "offline": _offline,
        "live": lambda a: _live(int(a)),
        "catch_up": lambda a: _catch_up(int(a)),
    }
    result = run[mode](arg)
    print(json.dumps(result))
