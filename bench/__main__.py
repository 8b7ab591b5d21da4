"""Run every benchmark, print medians and ratios, write bench/RESULTS.md.

    python -m bench            # quick mode (what CI can afford), prints only
    python -m bench --full     # the record: also writes bench/RESULTS.md
    python -m bench --only proxy,capture
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import capture_bench, guest_bench, proxy_bench
from .common import machine

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("proxy", "throughput", "capture", "tui", "guest")


def _fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def report(results: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "", "Machine: " + ", ".join(
        f"{k} {v}" for k, v in results["machine"].items()), ""]
    if "proxy" in results:
        lines += ["## Proxy latency (round trip, µs; added = minus direct, same run)", "",
                  "| fds | relay | p50 | p99 | added p50 | added p99 | added p50 / socat's | "
                  "added p99 / socat's |", "|---|---|---|---|---|---|---|---|"]
        for r in results["proxy"]:
            lines.append(f"| {r['fds']} | {r['relay']} | {_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | "
                         f"{_fmt(r['added_p50_us'])} | {_fmt(r['added_p99_us'])} | "
                         f"{_fmt(r.get('vs_socat_p50'), 2)} | {_fmt(r.get('vs_socat_p99'), 2)} |")
        lines.append("")
    if "throughput" in results:
        lines += ["## Proxy throughput (one-way messages back to back)", "",
                  "| relay | msgs/s | vs direct |", "|---|---|---|"]
        for r in results["throughput"]:
            lines.append(f"| {r['relay']} | {_fmt(r['msgs_per_s'], 0)} | {_fmt(r['vs_direct'], 2)} |")
        lines.append("")
    if "capture" in results:
        c = results["capture"]
        lines += [f"## Capture write and offline read ({c['messages']:,} messages, {c.get('source')})",
                  "", "| what | msgs/s | vs tshark + our Lua |", "|---|---|---|"]
        lines.append(f"| write (frames -> pcapng) | {_fmt(c['write_msgs_per_s'], 0)} | |")
        for name in ("read", "read_json", "read_stats"):
            lines.append(f"| `vuinspect {name.replace('_', ' --')}` | "
                         f"{_fmt(c[name + '_msgs_per_s'], 0)} | {_fmt(c.get(name + '_vs_tshark'), 2)} |")
        lines.append(f"| tshark -X lua_script:dissectors/vhost_user.lua -r | "
                     f"{_fmt(c.get('tshark_lua_msgs_per_s'), 0)} | 1.00 |")
        lines.append(f"| pyshark iterating (same Lua) | {_fmt(c.get('pyshark_msgs_per_s'), 0)} | |")
        lines.append("")
    if "tui" in results:
        lines += ["## TUI on a big capture", "", "```", json.dumps(results["tui"], indent=1), "```", ""]
    if "guest" in results:
        g = results["guest"]
        lines += ["## Real guest: QEMU TCG + qemu-storage-daemon, boot + disk I/O", ""]
        if "skipped" in g:
            lines.append(f"skipped: {g['skipped']}")
        else:
            lines.append(f"direct {g['direct_s']:.2f} s, through the proxy with capture "
                         f"{g['proxy_capture_s']:.2f} s: ratio **{g['ratio']:.3f}** (median of "
                         f"{g['reps']}, {g['guest_io_kib']} KiB written and read back)")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="full sizes; writes bench/RESULTS.md")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    p.add_argument("--merge", metavar="FILE",
                   help="take the parts not run now from an earlier --json file of the same mode")
    args = p.parse_args(argv)
    quick = not args.full
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    results: dict = {"machine": machine(), "mode": "quick" if quick else "full"}
    t0 = time.time()
    for part in parts:
        print(f"== {part}", file=sys.stderr, flush=True)
        if part == "proxy":
            results["proxy"] = proxy_bench.latency(quick)
        elif part == "throughput":
            results["throughput"] = proxy_bench.throughput(quick)
        elif part == "capture":
            results["capture"] = capture_bench.run(quick)
        elif part == "tui":
            try:
                from . import tui_bench
            except ImportError as exc:
                results["tui"] = {"skipped": f"no TUI benchmark: {exc}"}
            else:
                results["tui"] = tui_bench.run(quick)
        elif part == "guest":
            results["guest"] = guest_bench.run(quick)
        else:
            p.error(f"unknown part {part!r}")
    results["seconds"] = time.time() - t0
    command = "python -m bench" + (" --full" if args.full else "") + \
        (f" --only {args.only}" if args.only != ",".join(PARTS) else "")
    if args.merge:
        with open(args.merge) as f:
            earlier = json.load(f)
        for part in PARTS:
            if part not in results and part in earlier:
                results[part] = earlier[part]
                parts.append(part)
        command = f"{earlier.get('command', 'python -m bench')}, then {command} --merge"
    results["command"] = command
    text = report(results, command)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.full and set(parts) == set(PARTS):
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write("# Benchmark results\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
