"""Throughput of the capture writer, streaming reader and index (not a pytest module).

Run: python tests/capture/bench_capture.py [N]
Small frames like a vhost-user handshake: 12-byte headers with 0-40 byte payloads.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from vuinspect.capture import CaptureReader, CaptureWriter, build_index
from vuinspect.frames import Frame


def frames(n: int) -> list[Frame]:
    base = 1_764_000_000_000_000_000
    payloads = [bytes(12 + (i % 5) * 8) for i in range(5)]
    return [
        Frame(
            base + i * 1000,
            i % 4,
            "main" if i % 7 else "backend",
            "f2b" if i % 2 else "b2f",
            payloads[i % 5],
        )
        for i in range(n)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    todo = frames(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pcapng")
        t = time.perf_counter()
        with CaptureWriter(path) as w:
            for f in todo:
                w.write(f)
        dt = time.perf_counter() - t
        size = os.path.getsize(path)
        print(
            f"write: {n} frames, {size / 1e6:.1f} MB in {dt:.2f} s = {n / dt / 1e3:.0f} k frames/s"
        )
        t = time.perf_counter()
        reader = CaptureReader(path)
        count = sum(1 for _ in reader)
        dt = time.perf_counter() - t
        print(
            f"read:  {count} frames in {dt:.2f} s = {count / dt / 1e3:.0f} k frames/s (error={reader.error})"
        )
        t = time.perf_counter()
        index = build_index(path)
        dt = time.perf_counter() - t
        print(f"index: {len(index)} frames in {dt:.2f} s = {len(index) / dt / 1e3:.0f} k frames/s")
        t = time.perf_counter()
        step = max(1, n // 10000)
        for i in range(0, n, step):
            index.frame(i)
        dt = time.perf_counter() - t
        print(f"index.frame: {len(range(0, n, step)) / dt / 1e3:.0f} k lookups/s")
        index.close()


if __name__ == "__main__":
    main()
