"""Proxy latency and throughput: direct vs socat vs vuinspect proxy (with/without capture, TUI).

Three processes per run (client, relay, server), on loopback Unix sockets, as
in ../shared/TECH.md §5.  Variants run interleaved, repeated, and reported as
medians; "added" latency is the variant's minus the direct connection's from
the same repetition.
"""

from __future__ import annotations

import os
import shutil

from .common import PY, median, process, run_json, tempdir, wait_for_socket

RELAYS = ("direct", "socat", "proxy", "proxy+capture", "proxy+tui")


def _relay_cmd(kind: str, listen: str, server: str, tmp: str) -> list[str] | None:
    if kind == "socat":
        if not shutil.which("socat"):
            return None
        return ["socat", f"UNIX-LISTEN:{listen},fork", f"UNIX-CONNECT:{server}"]
    base = [PY, "-m", "vuinspect", "proxy", "--listen", listen, "--connect", server]
    if kind == "proxy":
        return [*base, "--no-tui", "-q"]
    if kind == "proxy+capture":
        return [*base, "--no-tui", "-q", "-w", os.path.join(tmp, "bench.pcapng")]
    if kind == "proxy+tui":
        return [*base, "--tui-headless", "-w", os.path.join(tmp, "bench-tui.pcapng")]
    return None


def _one(kind: str, fds: int, rounds: int, tmp: str, blast: int = 0) -> dict | None:
    server = os.path.join(tmp, "server.sock")
    listen = os.path.join(tmp, f"relay-{kind.replace('+', '-')}.sock")
    with process([PY, "-m", "bench.peers", "server", "--listen", server], ready="ready"):
        if kind == "direct":
            target = server
            relay = None
        else:
            relay = _relay_cmd(kind, listen, server, tmp)
            if relay is None:
                return None
            target = listen
        with (process(relay) if relay else _nothing()) as proc:
            try:
                wait_for_socket(target)
            except RuntimeError:
                if proc is not None and proc.poll() is not None:
                    return None  # this relay cannot run here (e.g. no headless TUI yet)
                raise
            if blast:
                return run_json([PY, "-m", "bench.peers", "blast", "--connect", target,
                                 "--messages", str(blast)])
            return run_json([PY, "-m", "bench.peers", "client", "--connect", target,
                             "--rounds", str(rounds), "--warmup", str(max(200, rounds // 20)),
                             "--fds", str(fds)])


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def latency(quick: bool) -> list[dict]:
    rounds = 3000 if quick else 100_000
    reps = 1 if quick else 3
    rows: list[dict] = []
    with tempdir() as tmp:
        for fds in (0, 1, 8):
            samples: dict[str, list[dict]] = {k: [] for k in RELAYS}
            for _ in range(reps):
                for kind in RELAYS:
                    if kind == "socat" and fds:
                        continue  # socat drops fds: vhost-user breaks through it
                    r = _one(kind, fds, rounds, tmp)
                    if r is not None:
                        samples[kind].append(r)
            direct50 = median([r["p50_us"] for r in samples["direct"]])
            direct99 = median([r["p99_us"] for r in samples["direct"]])
            for kind in RELAYS:
                if not samples[kind]:
                    continue
                p50 = median([r["p50_us"] for r in samples[kind]])
                p99 = median([r["p99_us"] for r in samples[kind]])
                rows.append({"fds": fds, "relay": kind, "rounds": rounds, "reps": len(samples[kind]),
                             "p50_us": p50, "p99_us": p99,
                             "added_p50_us": p50 - direct50, "added_p99_us": p99 - direct99})
    socat = {r["fds"]: r for r in rows if r["relay"] == "socat"}
    for r in rows:
        s = socat.get(0)
        if s and r["relay"] != "direct" and s["added_p50_us"] > 0:
            r["vs_socat_p50"] = r["added_p50_us"] / s["added_p50_us"]
            r["vs_socat_p99"] = r["added_p99_us"] / s["added_p99_us"] if s["added_p99_us"] > 0 \
                else None
    return rows


def throughput(quick: bool) -> list[dict]:
    n = 20_000 if quick else 300_000
    rows = []
    with tempdir() as tmp:
        results: dict[str, list[float]] = {}
        for _ in range(1 if quick else 3):
            for kind in ("direct", "proxy", "proxy+capture"):
                r = _one(kind, 0, 0, tmp, blast=n)
                if r is not None:
                    results.setdefault(kind, []).append(r["msgs_per_s"])
        direct = median(results.get("direct", []))
        for kind, values in results.items():
            m = median(values)
            rows.append({"relay": kind, "messages": n, "msgs_per_s": m, "vs_direct": m / direct})
    return rows
