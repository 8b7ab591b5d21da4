"""`read` on a capture of many short connections vs tshark + our Lua (issue 11 item 8).

One connection = OPEN, GET_FEATURES, its reply, CLOSE for every other one.
`read` used to scan every framer of every connection per connection it closed (quadratic: 16k connections
took 12.9 s, 100k did not finish in 120 s); it must stay linear, within 2x of
tshark + our Lua dissector on the same file.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator

from vuinspect.capture import CaptureWriter
from vuinspect.frames import Frame, event_frame

from .common import PY, tempdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "dissectors", "vhost_user.lua")


def many_connections(n: int, t0: int = 1_764_000_000_000_000_000) -> Iterator[Frame]:
    """The frames of ``n`` one-request connections; every other one still open at the end."""
    request = struct.pack("<III", 1, 1, 0)  # GET_FEATURES
    reply = struct.pack("<IIIQ", 1, 5, 8, 1 << 32)
    t = t0
    for conn in range(1, n + 1):
        yield event_frame("open", t, conn, {"label": f"conn {conn}"})
        yield Frame(t + 1000, conn, "main", "f2b", request)
        yield Frame(t + 2000, conn, "main", "b2f", reply)
        if conn % 2:
            yield event_frame("close", t + 3000, conn, {"reason": "eof"})
        t += 10_000


def _timed(args: list[str], timeout: float, cpu: dict | None = None, key: str = "") -> float:
    """Wall seconds of a command; its CPU seconds (user + sys) go to ``cpu[key]``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        r = subprocess.run(args, stdout=devnull, stderr=subprocess.PIPE, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{args[:5]} failed: {r.stderr.decode()[-300:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu[key] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall


def run(quick: bool) -> dict:
    n = 10_000 if quick else 100_000
    result: dict = {"connections": n, "frames": 4 * n}
    with tempdir() as tmp:
        path = os.path.join(tmp, "conns.pcapng")
        with CaptureWriter(path) as w:
            for f in many_connections(n):
                w.write(f)
        result["file_mb"] = os.path.getsize(path) / 1e6
        result["read_s"] = _timed([PY, "-m", "vuinspect", "read", path], 1800, result, "read_cpu_s")
        half = os.path.join(tmp, "half.pcapng")
        with CaptureWriter(half) as w:
            for f in many_connections(n // 2):
                w.write(f)
        result["read_half_s"] = _timed(
            [PY, "-m", "vuinspect", "read", half], 1800, result, "read_half_cpu_s"
        )
        result["growth"] = result["read_s"] / result["read_half_s"]  # 2.0 = linear
        result["growth_cpu"] = result["read_cpu_s"] / result["read_half_cpu_s"]
        if shutil.which("tshark") and os.path.exists(LUA):
            result["tshark_lua_s"] = _timed(
                ["tshark", "-n", "-X", f"lua_script:{LUA}", "-r", path],
                1800,
                result,
                "tshark_lua_cpu_s",
            )
            result["read_vs_tshark"] = result["read_s"] / result["tshark_lua_s"]
        else:
            result["tshark_lua_s"] = None
    return result


def table(r: dict) -> list[str]:
    """The report section: read vs tshark + Lua on the same many-connection file."""
    ts = r.get("tshark_lua_s")
    lines = [
        f"## Many connections ({r['connections']:,} connections, {r['frames']:,} frames, "
        f"{r['file_mb']:.1f} MB)",
        "",
        "| | wall s | CPU s | wall / tshark + Lua |",
        "|---|---|---|---|",
        f"| `vuinspect read` | {r['read_s']:.2f} | {r.get('read_cpu_s', 0):.2f} | "
        + (f"{r['read_vs_tshark']:.2f}x |" if ts else "- |"),
    ]
    if ts:
        lines.append(
            f"| tshark + our Lua | {ts:.2f} | {r.get('tshark_lua_cpu_s', 0):.2f} | 1.00x |"
        )
    lines += [
        "",
        f"Half the connections: {r['read_half_s']:.2f} s wall (growth x{r['growth']:.2f}, "
        f"CPU x{r.get('growth_cpu', 0):.2f} for twice the connections; 2.0 is linear).",
        "",
    ]
    return lines
