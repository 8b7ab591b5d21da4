"""Run every benchmark, print medians and ratios, write bench/RESULTS.md.

python -m bench            # quick mode (what CI can afford), prints only
python -m bench --full     # the record: also writes bench/RESULTS.md
python -m bench --only proxy,capture
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from . import capture_bench, conns_bench, guest_bench, lua_bench, overhead_bench, proxy_bench
from .common import machine

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("proxy", "throughput", "capture", "tui", "guest", "conns", "lua", "overhead")


def _fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def tui_table(t: dict) -> list[str]:
    """`vuinspect view` against termshark (same file, same 160x50 screen), then the details."""
    lines = [f"## TUI on a big capture ({t.get('frames', 0):,} frames, {t.get('size_mb')} MB)", ""]
    ts = t.get("termshark") or {}
    if "first_paint_s" in t:
        end = t["index_done_s"] + t["to_last_row_s"]
        lines += [
            "| | first paint (s) | last row on screen, from start (s) | peak RSS (MB) |",
            "|---|---|---|---|",
            f"| `vuinspect view` | {t['first_paint_s']:.2f} | {end:.2f} | {t['peak_rss_mb']:.0f} |",
        ]
        if "skipped" in ts:
            lines.append(f"| termshark | skipped: {ts['skipped']} | | |")
        elif ts:
            last = (
                f"{ts['last_row_s']:.1f}"
                if "last_row_s" in ts
                else f"not reached: {ts.get('stopped')}"
            )
            lines.append(
                f"| termshark + our Lua | {_fmt(ts.get('first_paint_s'), 2)} | {last} | "
                f"{_fmt(ts.get('peak_rss_mb'), 0)} |"
            )
            if "first_paint_s" in ts and "last_row_s" in ts:
                lines += [
                    "",
                    f"Ratios (termshark / vuinspect): first paint "
                    f"{ts['first_paint_s'] / t['first_paint_s']:.1f}x, last row "
                    f"{ts['last_row_s'] / end:.1f}x, peak RSS "
                    f"{ts['peak_rss_mb'] / t['peak_rss_mb']:.1f}x.",
                ]
        lines.append("")
    details = {k: v for k, v in t.items() if k != "termshark"}
    lines += ["```", json.dumps(details, indent=1), "```", ""]
    return lines


def report(results: dict, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in results["machine"].items() if k != "load_before"),
        "",
    ]
    runs = results.get("runs") or {}
    if runs:
        lines += [
            "Each part: when it ran and the load average before it (this VM is shared and "
            "noisy; compare ratios within a part, not across parts).",
            "",
            "| part | when | load before | options |",
            "|---|---|---|---|",
        ]
        for part in PARTS:
            r = runs.get(part)
            if r is not None and part in results:
                opts = " ".join(
                    x
                    for x in (
                        f"--pin {r['pin']}" if r.get("pin") is not None else "",
                        "--awake" if r.get("awake") else "",
                    )
                    if x
                )
                lines.append(
                    f"| {part} | {r.get('when', '-')} | {r.get('load_before', '-')} | "
                    f"{opts or '-'} |"
                )
        lines.append("")
    if "proxy" in results:
        lines += [
            "## Proxy latency (round trip, µs; added = minus direct, same run)",
            "",
            "| fds | relay | p50 | p99 | added p50 | added p99 | added p50 / socat's | "
            "added p99 / socat's | relay CPU µs / round trip | CPU / socat's |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["proxy"]:
            lines.append(
                f"| {r['fds']} | {r['relay']} | {_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | "
                f"{_fmt(r['added_p50_us'])} | {_fmt(r['added_p99_us'])} | "
                f"{_fmt(r.get('vs_socat_p50'), 2)} | {_fmt(r.get('vs_socat_p99'), 2)} | "
                f"{_fmt(r.get('cpu_us_per_rt'))} | {_fmt(r.get('vs_socat_cpu'), 2)} |"
            )
        lines.append("")
    if "throughput" in results:
        lines += [
            "## Proxy throughput (one-way messages back to back)",
            "",
            "| relay | msgs/s | vs direct |",
            "|---|---|---|",
        ]
        for r in results["throughput"]:
            lines.append(
                f"| {r['relay']} | {_fmt(r['msgs_per_s'], 0)} | {_fmt(r['vs_direct'], 2)} |"
            )
        lines.append("")
    if "capture" in results:
        c = results["capture"]
        lines += [
            f"## Capture write and offline read ({c['messages']:,} messages, {c.get('source')})",
            "",
            "| what | msgs/s | vs tshark + our Lua |",
            "|---|---|---|",
        ]
        lines.append(f"| write (frames -> pcapng) | {_fmt(c['write_msgs_per_s'], 0)} | |")
        for name in ("read", "read_json", "read_stats"):
            lines.append(
                f"| `vuinspect {name.replace('_', ' --')}` | "
                f"{_fmt(c[name + '_msgs_per_s'], 0)} | {_fmt(c.get(name + '_vs_tshark'), 2)} |"
            )
        lines.append(
            f"| tshark -X lua_script:dissectors/vhost_user.lua -r | "
            f"{_fmt(c.get('tshark_lua_msgs_per_s'), 0)} | 1.00 |"
        )
        lines.append(f"| pyshark iterating (same Lua) | {_fmt(c.get('pyshark_msgs_per_s'), 0)} | |")
        lines.append("")
    if "tui" in results:
        lines += tui_table(results["tui"])
    if "guest" in results:
        lines += guest_bench.table(results["guest"])
    if "conns" in results:
        lines += conns_bench.table(results["conns"])
    if "overhead" in results:
        lines += overhead_bench.table(results["overhead"])
    if "lua" in results:
        lines += [
            "## Lua dissector vs a minimal Lua dissector (tshark)",
            "",
            lua_bench.table(results["lua"]),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="full sizes; writes bench/RESULTS.md")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    p.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="proxy latency with client, relay and server all on this one CPU",
    )
    p.add_argument(
        "--awake",
        action="store_true",
        help="proxy latency with a nice-19 busy loop per CPU (no vCPU halts)",
    )
    p.add_argument(
        "--merge",
        metavar="FILE",
        help="take the parts not run now from an earlier --json file of the same mode",
    )
    p.add_argument(
        "--render",
        metavar="FILE",
        help="run nothing: print (and with --full write) the report of a --json file",
    )
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        return _output(
            results,
            results.get("command", "python -m bench"),
            args,
            [x for x in PARTS if x in results],
        )
    quick = not args.full
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    results: dict = {"machine": machine(), "mode": "quick" if quick else "full"}
    t0 = time.time()
    for part in parts:
        print(f"== {part}", file=sys.stderr, flush=True)
        if part == "proxy":
            results["proxy"] = proxy_bench.latency(quick, awake=args.awake, pin=args.pin)
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
        elif part == "conns":
            results["conns"] = conns_bench.run(quick)
        elif part == "overhead":
            results["overhead"] = overhead_bench.run(quick, pin=args.pin)
        elif part == "lua":
            results["lua"] = lua_bench.run(20_000 if quick else 100_000)
        else:
            p.error(f"unknown part {part!r}")
    results["seconds"] = time.time() - t0
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))
    results["runs"] = {
        part: {
            "when": when,
            "load_before": results["machine"].get("load_before"),
            "pin": args.pin,
            "awake": args.awake,
        }
        for part in parts
    }
    command = (
        "python -m bench"
        + (" --full" if args.full else "")
        + (f" --only {args.only}" if args.only != ",".join(PARTS) else "")
        + (" --awake" if args.awake else "")
        + (f" --pin {args.pin}" if args.pin is not None else "")
    )
    if args.merge:
        with open(args.merge) as f:
            earlier = json.load(f)
        for part in PARTS:
            if part not in results and part in earlier:
                results[part] = earlier[part]
                results["runs"][part] = earlier.get("runs", {}).get(
                    part, {"load_before": earlier.get("machine", {}).get("load_before")}
                )
                parts.append(part)
        command = f"{earlier.get('command', 'python -m bench')}, then {command} --merge"
    results["command"] = command
    return _output(results, command, args, parts)


def _output(results: dict, command: str, args: argparse.Namespace, parts: list[str]) -> int:
    text = report(results, command)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.full and set(parts) == set(PARTS):
        notes = ""
        with contextlib.suppress(OSError), open(os.path.join(HERE, "NOTES.md")) as f:
            notes = "\n" + f.read()  # the hand-written reading of the numbers and the profiles
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write("# Benchmark results\n\n" + text + "\n" + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
