"""Proxy latency and throughput: direct vs socat vs vuinspect proxy (with/without capture, TUI).

Three processes per run (client, relay, server), on loopback Unix sockets, as
in ../shared/TECH.md §5.  Variants run interleaved, repeated, and reported as
medians; "added" latency is the variant's minus the direct connection's from
the same repetition (the machine's speed drifts between minutes, not within
one repetition).  Also reported: the relay's CPU time per round trip (all its
processes, user + system, from /proc), which other load disturbs far less
than latency does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from vuinspect.testing.procs import proxy_command

from .common import PY, median, process, process_tree, run_json, tempdir, wait_for_socket

#: proxy: ``--no-tui -q`` (forwarding only); +capture: ``-w``; +lines: summary lines (to
#: /dev/null) and ``-w``, decoded by the viewer child; +tui: the TUI, headless, and ``-w``.
RELAYS = ("direct", "socat", "proxy", "proxy+capture", "proxy+lines", "proxy+tui")


def _relay_cmd(kind: str, listen: str, server: str, tmp: str) -> list[str] | None:
    if kind == "socat":
        if not shutil.which("socat"):
            return None
        return ["socat", f"UNIX-LISTEN:{listen},fork", f"UNIX-CONNECT:{server}"]
    if kind == "proxy":
        return proxy_command(listen, server)
    if kind == "proxy+capture":
        return proxy_command(listen, server, "-w", os.path.join(tmp, "bench.pcapng"), "--force")
    if kind == "proxy+lines":  # every line really printed (a pipe nobody reads would stall it)
        lines = os.path.join(tmp, "bench-lines.pcapng")
        return [
            "sh",
            "-c",
            'exec "$0" "$@" > /dev/null',
            *proxy_command(listen, server, "-w", lines, "--force", quiet=False),
        ]
    if kind == "proxy+tui":
        tui = os.path.join(tmp, "bench-tui.pcapng")
        return proxy_command(
            listen, server, "--tui-headless", "-w", tui, "--force", quiet=False, no_tui=False
        )
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
        with process(relay) if relay else _nothing() as proc:
            try:
                wait_for_socket(target)
            except RuntimeError:
                if proc is not None and proc.poll() is not None:
                    return None  # this relay cannot run here (e.g. no headless TUI yet)
                raise
            if blast:
                return run_json(
                    [
                        PY,
                        "-m",
                        "bench.peers",
                        "blast",
                        "--connect",
                        target,
                        "--messages",
                        str(blast),
                    ]
                )
            warmup = max(200, rounds // 20)
            cpu0 = tree_cpu(proc.pid) if proc is not None else 0.0
            result = run_json(
                [
                    PY,
                    "-m",
                    "bench.peers",
                    "client",
                    "--connect",
                    target,
                    "--rounds",
                    str(rounds),
                    "--warmup",
                    str(warmup),
                    "--fds",
                    str(fds),
                ]
            )
            if proc is not None:
                result["cpu_us_per_rt"] = (tree_cpu(proc.pid) - cpu0) * 1e6 / (rounds + warmup)
            return result


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, reaped children included) of ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@contextlib.contextmanager
def busy_cpus(on: bool) -> Iterator[None]:
    """One nice-19 busy loop per CPU, so that no vCPU halts (see NOTES.md: on an idle VM
    every wake-up of a halted vCPU costs tens of µs, more than the relays themselves)."""
    procs = (
        [
            subprocess.Popen([PY, "-c", "import os; os.nice(19)\nwhile True: pass"])
            for _ in range(os.cpu_count() or 1)
        ]
        if on
        else []
    )
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run every process started meanwhile on one CPU (children inherit the affinity).

    On a VM, a wake-up that crosses to another, halted vCPU costs tens of µs and
    depends on where the scheduler happened to put the three processes; on one
    CPU every hop is a plain context switch, so a relay's cost shows undisturbed.
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def latency(
    quick: bool,
    reps: int | None = None,
    rounds: int | None = None,
    awake: bool = False,
    pin: int | None = None,
) -> list[dict]:
    rounds = rounds or (3000 if quick else 100_000)
    reps = reps or (1 if quick else 5)
    rows: list[dict] = []
    with tempdir() as tmp, busy_cpus(awake), pinned(pin):
        for fds in (0, 1, 8):
            # Per repetition: direct first, then every relay; "added" pairs each with that direct.
            samples: dict[str, list[dict]] = {k: [] for k in RELAYS}
            added: dict[str, list[tuple[float, float]]] = {k: [] for k in RELAYS}
            for _ in range(reps):
                direct = None
                for kind in RELAYS:
                    if kind == "socat" and fds:
                        continue  # socat drops fds: vhost-user breaks through it
                    r = _one(kind, fds, rounds, tmp)
                    if r is None:
                        continue
                    if kind == "direct":
                        direct = r
                    samples[kind].append(r)
                    if direct is not None:
                        added[kind].append(
                            (r["p50_us"] - direct["p50_us"], r["p99_us"] - direct["p99_us"])
                        )
            for kind in RELAYS:
                if not samples[kind]:
                    continue
                cpu = [r["cpu_us_per_rt"] for r in samples[kind] if "cpu_us_per_rt" in r]
                rows.append(
                    {
                        "fds": fds,
                        "relay": kind,
                        "rounds": rounds,
                        "reps": len(samples[kind]),
                        "p50_us": median([r["p50_us"] for r in samples[kind]]),
                        "p99_us": median([r["p99_us"] for r in samples[kind]]),
                        "added_p50_us": median([a for a, _ in added[kind]]),
                        "added_p99_us": median([b for _, b in added[kind]]),
                        "cpu_us_per_rt": median(cpu) if cpu else None,
                    }
                )
    socat = {r["fds"]: r for r in rows if r["relay"] == "socat"}
    for r in rows:
        s = socat.get(0)
        if s and r["relay"] != "direct" and s["added_p50_us"] > 0:
            r["vs_socat_p50"] = r["added_p50_us"] / s["added_p50_us"]
            r["vs_socat_p99"] = (
                r["added_p99_us"] / s["added_p99_us"] if s["added_p99_us"] > 0 else None
            )
        if s and r.get("cpu_us_per_rt") and s.get("cpu_us_per_rt"):
            r["vs_socat_cpu"] = r["cpu_us_per_rt"] / s["cpu_us_per_rt"]
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
