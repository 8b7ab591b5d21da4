"""Round-trip latency: direct vs socat vs the proxy, with the in-repo test peers.

    python -m vuinspect.testing.latency [--rounds 20000] [--runs 5] [--fds] [--json]

Every path runs as separate processes (front-end -> relay -> back-end), the
paths interleaved run by run so that background load hits them alike; the
median over runs of each run's p50 is reported, and the proxy's *added* p50
(over direct) as a multiple of socat's.  socat drops fds, so with ``--fds`` it
is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from .procs import backend_args, proxy_command, stop, wait_path


@contextlib.contextmanager
def _proc(argv: list[str], ready: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if ready:
            wait_path(ready, p, 15.0)
            time.sleep(0.2)
        yield p
    finally:
        stop(p, timeout=10, check=False)


def _frontend(path: str, rounds: int, fds: bool) -> dict[str, float]:
    argv = [
        sys.executable,
        "-m",
        "vuinspect.testing.frontend",
        "--connect",
        path,
        "--rounds",
        str(rounds),
        "--warmup",
        "1000",
    ] + (["--fds"] if fds else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(rounds: int = 20000, runs: int = 5, fds: bool = False) -> dict[str, dict[str, float]]:
    d = tempfile.mkdtemp(dir="/tmp", prefix="vulat-")
    py = sys.executable
    be = os.path.join(d, "be.sock")
    paths: dict[str, tuple[list[str], str] | None] = {"direct": None}
    if shutil.which("socat") and not fds:
        s = os.path.join(d, "socat.sock")
        paths["socat"] = (["socat", f"UNIX-LISTEN:{s},fork", f"UNIX-CONNECT:{be}"], s)
    p1 = os.path.join(d, "px.sock")
    paths["proxy"] = (proxy_command(p1, be, no_tui=False), p1)
    p2 = os.path.join(d, "pxw.sock")
    capture = ("-w", os.path.join(d, "c.pcapng"), "--force")
    paths["proxy -w"] = (proxy_command(p2, be, *capture, no_tui=False), p2)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    try:
        with _proc([py, "-m", *backend_args(be)], ready=be):
            for _ in range(runs):
                for name, spec in paths.items():
                    if spec is None:
                        results[name].append(_frontend(be, rounds, fds))
                        continue
                    argv, sock = spec
                    with _proc(argv, ready=sock):
                        results[name].append(_frontend(sock, rounds, fds))
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(sock)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    table: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        p50s = [r["p50_us"] for r in rs]
        table[name] = {
            "p50_us": statistics.median(p50s),
            "p50_min_us": min(p50s),
            "p50_max_us": max(p50s),
            "p99_us": statistics.median(r["p99_us"] for r in rs),
        }
    direct = table["direct"]["p50_us"]
    if "socat" in table:
        added_socat = table["socat"]["p50_us"] - direct
        for name in ("proxy", "proxy -w"):
            if added_socat > 0:
                table[name]["added_vs_socat"] = (table[name]["p50_us"] - direct) / added_socat
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vuinspect.testing.latency", description=__doc__.splitlines()[0]
    )
    p.add_argument("--rounds", type=int, default=20000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fds", action="store_true", help="an eventfd with every request")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    table = measure(args.rounds, args.runs, args.fds)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(f"{'path':<10} {'p50 µs (median, range)':>26} {'p99 µs':>8} {'added p50 / socat':>18}")
    for name, r in table.items():
        ratio = f"{r['added_vs_socat']:.2f}x" if "added_vs_socat" in r else ""
        rng = f"{r['p50_us']:.0f} ({r['p50_min_us']:.0f}-{r['p50_max_us']:.0f})"
        print(f"{name:<10} {rng:>26} {r['p99_us']:>8.0f} {ratio:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
