"""A real guest: QEMU (TCG) + qemu-storage-daemon boot-and-I/O, direct vs through the proxy."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import median


def run(quick: bool) -> dict:
    from vuinspect.demo.guest import build_guest
    from vuinspect.demo.runners import MissingProgram
    from vuinspect.demo.scenarios import ProxySpec, run_blk

    try:
        guest = build_guest()
    except (MissingProgram, RuntimeError) as exc:
        return {"skipped": str(exc)}
    reps = 1 if quick else 5
    size_kib = 1024 if quick else 16384
    times: dict[str, list[float]] = {"direct": [], "proxy+capture": []}
    for _ in range(reps):
        for kind in times:
            with tempfile.TemporaryDirectory(prefix="vubench.", dir="/tmp") as tmp:
                work = Path(tmp)
                via = ProxySpec(capture=work / "run.pcapng") if kind != "direct" else None
                t0 = time.perf_counter()
                out = run_blk(work, guest, via=via, size_kib=size_kib, timeout=300)
                elapsed = time.perf_counter() - t0
                if not out.ok:
                    raise RuntimeError(f"{kind} guest run failed: {out.verdict}")
                times[kind].append(elapsed)
    direct = median(times["direct"])
    proxied = median(times["proxy+capture"])
    return {
        "reps": reps,
        "guest_io_kib": size_kib,
        "direct_s": direct,
        "proxy_capture_s": proxied,
        "ratio": proxied / direct,
        "all": times,
    }
