"""A real guest: QEMU (TCG) + qemu-storage-daemon boot-and-I/O, direct vs through the proxy.

Three runs per repetition, interleaved: direct, through the proxy with a capture
(the ring sampler on, its default with a capture), and the same with
``--trace-notify`` (every kick and call relayed through the proxy's own eventfds;
issue 13 asks for <= 1.2x the run without).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import median


def run(quick: bool, reps: int | None = None) -> dict:
    from vuinspect.demo.guest import build_guest
    from vuinspect.demo.runners import MissingProgram
    from vuinspect.demo.scenarios import ProxySpec, run_blk

    try:
        guest = build_guest()
    except (MissingProgram, RuntimeError) as exc:
        return {"skipped": str(exc)}
    reps = reps or (1 if quick else 5)
    size_kib = 1024 if quick else 16384
    times: dict[str, list[float]] = {"direct": [], "proxy+capture": [], "proxy+notify": []}
    for _ in range(reps):
        for kind in times:
            with tempfile.TemporaryDirectory(prefix="vubench.", dir="/tmp") as tmp:
                work = Path(tmp)
                extra = ["--trace-notify"] if kind == "proxy+notify" else []
                via = ProxySpec(work / "run.pcapng", extra) if kind != "direct" else None
                t0 = time.perf_counter()
                out = run_blk(work, guest, via=via, size_kib=size_kib, timeout=300)
                elapsed = time.perf_counter() - t0
                if not out.ok:
                    raise RuntimeError(f"{kind} guest run failed: {out.verdict}")
                times[kind].append(elapsed)
    direct = median(times["direct"])
    proxied = median(times["proxy+capture"])
    notify = median(times["proxy+notify"])
    # paired per repetition (the runs of one repetition follow each other): on a shared
    # machine whose speed drifts between minutes this is steadier than a ratio of medians
    paired = [n / p for n, p in zip(times["proxy+notify"], times["proxy+capture"], strict=True)]
    return {
        "reps": reps,
        "guest_io_kib": size_kib,
        "direct_s": direct,
        "proxy_capture_s": proxied,
        "ratio": proxied / direct,
        "proxy_notify_s": notify,
        "notify_ratio": median(paired),
        "all": times,
    }


def table(g: dict) -> list[str]:
    """The report section (a result without the notify run is an older record)."""
    lines = ["## Real guest: QEMU TCG + qemu-storage-daemon, boot + disk I/O", ""]
    if "skipped" in g:
        return [*lines, f"skipped: {g['skipped']}", ""]
    lines.append(
        f"direct {g['direct_s']:.2f} s, through the proxy with capture "
        f"{g['proxy_capture_s']:.2f} s: ratio **{g['ratio']:.3f}** (median of "
        f"{g['reps']}, {g['guest_io_kib']} KiB written and read back)"
    )
    if "notify_ratio" in g:
        lines += [
            "",
            f"with `--trace-notify` {g['proxy_notify_s']:.2f} s: **{g['notify_ratio']:.3f}x** "
            "the proxy with capture without it (median of the per-repetition ratios; "
            "target <= 1.2x, issue 13)",
        ]
    return [*lines, ""]
