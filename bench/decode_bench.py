"""CPU per frame of the decode path alone (``Pipeline.feed``), for A/B runs of two trees.

The captures in captures/ are fed 60 times with the connections renumbered (real traffic,
every request the samples hold); the best of ``--reps`` passes is kept, in CPU time.
``--copies 700`` (100k frames, 2,100 connections) also shows what the objects kept per
connection cost the garbage collector, which a short run hides.
Compare an older tree by running this file with ``PYTHONPATH=<that tree>``::

    python bench/decode_bench.py
    git archive 6cd5098 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python bench/decode_bench.py
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from vuinspect.capture import read_frames
from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTURES = ("blk.pcapng", "fs.pcapng", "net.pcapng")


def frames(copies: int) -> list[Frame]:
    one = [f for name in CAPTURES for f in read_frames(os.path.join(ROOT, "captures", name))]
    return [dataclasses.replace(f, conn=f.conn + 1000 * k) for k in range(copies) for f in one]


def per_frame_us(feed: list[Frame], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        p = Pipeline()
        for f in feed:
            p.feed(f)
        p.close()
        best = min(best, time.process_time() - t)
    return best / len(feed) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(prog="python bench/decode_bench.py")
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    feed = frames(args.copies)
    import vuinspect

    tree = os.path.dirname(os.path.dirname(os.path.abspath(vuinspect.__file__)))
    print(f"{tree}: {len(feed)} frames, {per_frame_us(feed, args.reps):.2f} µs a frame (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
