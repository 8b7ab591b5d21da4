"""Capture write and offline read throughput vs tshark + our Lua dissector and pyshark.

The capture is made from real-traffic message mixes: the frames of the real
captures in captures/ (QEMU with qemu-storage-daemon, virtiofsd, dpdk-testpmd)
repeated with new connection ids and shifted times, falling back to the
hand-made device lifecycle when no real capture is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import replace

from vuinspect.capture import CaptureWriter, read_frames
from vuinspect.frames import Frame
from vuinspect.samples import device_start

from .common import PY, tempdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "dissectors", "vhost_user.lua")


#: The real captures the mix is made of: the three control-plane runs, named, so the mix
#: (and every figure measured on it) stays the same when captures/ gains a file
#: (blk-stall.pcapng's ring samples made it 2x the bytes and the Lua 1.5x slower).
MIX = ("blk", "fs", "net")


def traffic_mix() -> tuple[list[list[Frame]], str]:
    sessions: list[list[Frame]] = []
    paths = [os.path.join(ROOT, "captures", f"{name}.pcapng") for name in MIX]
    for path in [p for p in paths if os.path.exists(p)]:
        by_conn: dict[int, list[Frame]] = {}
        for f in read_frames(path):
            by_conn.setdefault(f.conn, []).append(f)
        sessions += [frames for frames in by_conn.values() if len(frames) > 5]
    if sessions:
        return sessions, "real captures in captures/"
    return [device_start()], "hand-made device lifecycle (no real captures found)"


def make_frames(n: int) -> tuple[list[Frame], str]:
    sessions, source = traffic_mix()
    out: list[Frame] = []
    conn = 0
    t = 1_764_000_000_000_000_000
    while len(out) < n:
        for frames in sessions:
            conn += 1
            t0 = frames[0].ts_ns
            for f in frames:
                out.append(replace(f, conn=conn, ts_ns=t + (f.ts_ns - t0)))
            t += frames[-1].ts_ns - t0 + 1_000_000
            if len(out) >= n:
                break
    return out[:n], source


def _timed(args: list[str], timeout: float) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        r = subprocess.run(args, stdout=devnull, stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode not in (0,):
        raise RuntimeError(f"{args[:5]} failed: {r.stderr.decode()[-300:]}")
    return time.perf_counter() - t0


def run(quick: bool) -> dict:
    n = 50_000 if quick else 1_000_000
    n_pyshark = 1_000 if quick else 10_000
    result: dict = {"messages": n}
    with tempdir() as tmp:
        frames, source = make_frames(n)
        result["source"] = source
        path = os.path.join(tmp, "mix.pcapng")
        best = float("inf")
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            with CaptureWriter(path) as w:
                for f in frames:
                    w.write(f)
            best = min(best, time.perf_counter() - t0)
        result["write_msgs_per_s"] = n / best
        result["file_mb"] = os.path.getsize(path) / 1e6
        del frames
        timeout = 3600
        for name, extra in (("read", []), ("read_json", ["--json"]), ("read_stats", ["--stats"])):
            secs = _timed([PY, "-m", "vuinspect", "read", *extra, path], timeout)
            result[f"{name}_msgs_per_s"] = n / secs
        if shutil.which("tshark") and os.path.exists(LUA):
            secs = _timed(["tshark", "-n", "-X", f"lua_script:{LUA}", "-r", path], timeout)
            result["tshark_lua_msgs_per_s"] = n / secs
            t = result["tshark_lua_msgs_per_s"]
            for name in ("read", "read_json", "read_stats"):
                result[f"{name}_vs_tshark"] = result[f"{name}_msgs_per_s"] / t
            result["pyshark_msgs_per_s"] = _pyshark_rate(path, n_pyshark)
        else:
            result["tshark_lua_msgs_per_s"] = None
    return result


def _pyshark_rate(path: str, limit: int) -> float | None:
    """Messages/s of pyshark iterating ``path``, in a child: pyshark's asyncio loop, its
    SIGCHLD handler and its subprocess transports must not outlive it in this process."""
    res = subprocess.run(
        [PY, "-m", "bench.capture_bench", "--pyshark", path, str(limit)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        return float(res.stdout.split()[-1])
    except (IndexError, ValueError):
        return None


def _pyshark_child(path: str, limit: int) -> float | None:
    try:
        import pyshark
    except ImportError:
        return None
    cap = pyshark.FileCapture(
        path, custom_parameters=["-X", f"lua_script:{LUA}"], keep_packets=False
    )
    t0 = time.perf_counter()
    count = 0
    try:
        for pkt in cap:
            _ = pkt.highest_layer
            count += 1
            if count >= limit:
                break
    finally:
        cap.close()
    return count / (time.perf_counter() - t0) if count else None


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--pyshark":
        print(_pyshark_child(sys.argv[2], int(sys.argv[3])))
