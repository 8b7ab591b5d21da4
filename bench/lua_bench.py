"""The Lua dissector against a minimal Lua dissector and tshark without Lua, one run.

The anchor (bench/minimal_vhost_user.lua) reads the header of the first message and
sets the Info column: what any Lua dissector of these captures costs.  Rows: tshark -r
(summary lines), -V (full trees), -2 (two passes), each with wall time and peak RSS;
the targets of issue 15 are ratios against the anchor (time) and no Lua (memory).

    python -m bench.lua_bench [--messages N] [--big]     # --big adds the 1M-message open
    python -m bench.lua_bench --before OLD.lua            # an older dissector, same run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from .capture_bench import LUA, ROOT, make_frames
from .common import tempdir

MINIMAL = os.path.join(ROOT, "bench", "minimal_vhost_user.lua")
MODES = {"summary": [], "verbose": ["-V"], "two_pass": ["-2"]}


def write_mix(path: str, n: int) -> None:
    from vuinspect.capture import CaptureWriter

    frames, _ = make_frames(n)
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)


def timed(args: list[str]) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak RSS MB) of one tshark run, output thrown away.

    CPU (user + system) is what the ratios use: this machine is shared, and wall time
    there measures the neighbours as much as tshark."""
    home = tempfile.mkdtemp(prefix="vubench-home.")  # no installed copy of the dissector
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(args, stdout=devnull, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status != 0 or "Lua Error" in err:
        raise RuntimeError(f"{args} failed: {err[-500:]}")
    return usage.ru_utime + usage.ru_stime, secs, usage.ru_maxrss / 1024


def tshark(path: str, lua: str | None, extra: list[str]) -> list[str]:
    args = ["tshark", "-n", "-r", path, *extra]
    return args + (["-X", f"lua_script:{lua}"] if lua else [])


def run(n: int = 100_000, big: bool = False, reps: int = 1, before: str | None = None) -> dict:
    """Every row of the table, in one run (each the best of ``reps``); ``before``: an
    older copy of the dissector measured beside it (a change's effect, same machine state).

    The repetitions go round all the rows in turn (not one row ``reps`` times, then the
    next): a neighbour's burst on this shared machine then hits every row alike."""
    out: dict = {"messages": n, "rows": {}}
    with tempdir() as tmp:
        path = os.path.join(tmp, "mix.pcapng")
        write_mix(path, n)
        whos = [("no_lua", None), ("minimal", MINIMAL), ("ours", LUA)]
        if before:
            whos.append(("before", before))
        rows = [
            (f"{mode}/{who}", tshark(path, lua, extra))
            for mode, extra in MODES.items()
            for who, lua in whos
            if who != "no_lua" or mode == "summary"
        ]
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(reps):
            for key, args in rows:
                got = timed(args)
                if key not in best or got[0] < best[key][0]:
                    best[key] = got
        for key, (cpu, wall, rss) in best.items():
            out["rows"][key] = {"s": cpu, "wall_s": wall, "rss_mb": rss}
        r = out["rows"]
        base = r["summary/minimal"]["s"]
        out["ratios"] = {
            "summary_vs_minimal": r["summary/ours"]["s"] / base,
            "verbose_vs_minimal_verbose": r["verbose/ours"]["s"] / r["verbose/minimal"]["s"],
            "two_pass_vs_minimal_summary": r["two_pass/ours"]["s"] / base,
            "rss_vs_no_lua": r["summary/ours"]["rss_mb"] / r["summary/no_lua"]["rss_mb"],
        }
        if before:
            out["before"] = before
            out["ratios_before"] = {
                "summary_vs_minimal": r["summary/before"]["s"] / base,
                "verbose_vs_minimal_verbose": r["verbose/before"]["s"] / r["verbose/minimal"]["s"],
                "two_pass_vs_minimal_summary": r["two_pass/before"]["s"] / base,
                "rss_vs_no_lua": r["summary/before"]["rss_mb"] / r["summary/no_lua"]["rss_mb"],
            }
        if big:
            os.remove(path)
            path = os.path.join(tmp, "mix1m.pcapng")
            write_mix(path, 1_000_000)
            cpu, wall, rss = timed(tshark(path, LUA, []))
            out["big"] = {"messages": 1_000_000, "s": cpu, "wall_s": wall, "rss_mb": rss}
    return out


TARGETS = {
    "summary_vs_minimal": 2.0,
    "verbose_vs_minimal_verbose": 3.0,
    "two_pass_vs_minimal_summary": 2.5,
    "rss_vs_no_lua": 1.3,
}


def table(res: dict) -> str:
    lines = [
        f"{res['messages']:,} messages (bench/capture_bench.py's mix); CPU seconds "
        "(user + system) and peak RSS, wall seconds in brackets",
        "",
        "| tshark | no Lua | minimal Lua (anchor) | dissectors/vhost_user.lua |"
        + (" before (--before) |" if "before" in res else ""),
        "|---|---|---|---|" + ("---|" if "before" in res else ""),
    ]
    r = res["rows"]
    whos = ("no_lua", "minimal", "ours") + (("before",) if "before" in res else ())
    for mode, label in (("summary", "-r (summary)"), ("verbose", "-r -V"), ("two_pass", "-r -2")):
        cells = []
        for who in whos:
            row = r.get(f"{mode}/{who}")
            cells.append(
                f"{row['s']:.2f} s ({row['wall_s']:.2f}), {row['rss_mb']:.0f} MB" if row else ""
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    old = res.get("ratios_before")
    lines += [
        "",
        "| ratio | measured | target |" + (" before |" if old else ""),
        "|---|---|---|" + ("---|" if old else ""),
    ]
    for k, v in res["ratios"].items():
        lines.append(f"| {k} | {v:.2f} | <= {TARGETS[k]} |" + (f" {old[k]:.2f} |" if old else ""))
    if "big" in res:
        b = res["big"]
        lines += [
            "",
            f"1,000,000 messages, tshark -r with our Lua: {b['s']:.1f} s CPU "
            f"({b['wall_s']:.1f} s wall), {b['rss_mb']:.0f} MB (target < 60 s, < 1536 MB)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.lua_bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--big", action="store_true", help="also open a 1M-message capture")
    p.add_argument("--reps", type=int, default=1, help="best of N runs per row")
    p.add_argument(
        "--before", metavar="LUA", help="an older copy of the dissector, measured beside it"
    )
    args = p.parse_args(argv)
    print(table(run(args.messages, args.big, args.reps, args.before)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
