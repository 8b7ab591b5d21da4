"""What the proxy's optional work costs the forwarding: the ring sampler and proxy rules.

    python -m bench --only overhead          # quick (CI): ~30 s
    python -m bench.overhead_bench [--full]  # the same, printed as the report section

Round-trip latency (0 fds, GET_FEATURES ping-pong as bench/peers.py) through the
proxy, variants interleaved per repetition, ratios against a baseline of the
same repetition (issues 13 and 14):

* rings: ``-w --rings off`` vs ``-w --rings on`` (100 ms) and ``--rings 10ms``,
  with one *started* vring whose ring lives in a memfd the client maps and moves
  (avail and used advance every 50 round trips), so the sampler really reads guest
  memory and writes ring frames while the client measures;
* rules: ``-q`` vs ``-q`` with 5 rules none of which matches GET_FEATURES.

Noise is measured, not assumed: the baseline runs twice per repetition (A and B),
and the ratio B/A is what "the same thing twice" gives on this machine.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import sys

from vuinspect.testing import wire
from vuinspect.testing.procs import proxy_command

from .common import PY, median, process, run_json, tempdir, wait_for_socket
from .peers import round_trips

#: One memfd region of 1 MiB at this front-end (userspace) address; the split ring inside.
UADDR = 0x7F0000000000
REGION = 1 << 20
NUM = 256
DESC, AVAIL, USED = 0x1000, 0x3000, 0x4000
#: Rules that never match GET_FEATURES (the round trip) nor its reply.
RULES = (
    "delay 2s: name == GET_VRING_BASE",
    "drop: name == SET_VRING_CALL and payload.index == 1",
    "reply-error: name == GET_CONFIG",
    "disconnect: name == SET_VRING_ENABLE",
    "corrupt 0=0xff: name == SET_VRING_NUM and payload.num == 7",
)
RINGS = ("rings off A", "rings off B", "rings on", "rings 10ms")
RULE_VARIANTS = ("no rules A", "no rules B", "5 rules")


def _args(variant: str, tmp: str) -> list[str]:
    cap = ["-w", os.path.join(tmp, "overhead.pcapng"), "--force"]
    if variant.startswith("rings off"):
        return [*cap, "--rings", "off"]
    if variant == "rings on":
        return [*cap, "--rings", "on"]
    if variant == "rings 10ms":
        return [*cap, "--rings", "10ms"]
    if variant == "5 rules":
        return [x for r in RULES for x in ("--rule", r)]
    return []


def client(path: str, rounds: int, warmup: int, ring: bool) -> dict:
    """Ping-pong GET_FEATURES; with ``ring``, first start vring 0 in a memfd and move it."""
    sock = wire.connect(path, retries=200)

    def call(request: int, payload: bytes = b"", fds: list[int] | None = None) -> None:
        wire.send_raw(
            sock, wire.pack(request, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY, payload), fds or []
        )
        reply = wire.recv_msg(sock)
        if reply is None:
            raise SystemExit(f"no reply to {request}")

    mem = None
    if ring:
        fd = wire.memfd("bench-ram", REGION)
        mem = mmap.mmap(fd, REGION)
        call(
            wire.SET_MEM_TABLE,
            struct.pack("=II", 1, 0) + struct.pack("=QQQQ", 0, REGION, UADDR, 0),
            [fd],
        )
        os.close(fd)
        call(wire.SET_VRING_NUM, struct.pack("=II", 0, NUM))
        call(
            wire.SET_VRING_ADDR,
            struct.pack("=IIQQQQ", 0, 0, UADDR + DESC, UADDR + USED, UADDR + AVAIL, 0),
        )
        call(wire.SET_VRING_BASE, struct.pack("=II", 0, 0))
        for request in (wire.SET_VRING_CALL, wire.SET_VRING_KICK):  # kick last: it starts the ring
            efd = wire.eventfd()
            call(request, wire.U64.pack(0), [efd])
            os.close(efd)

    def move(i: int) -> None:
        if mem is not None and i % 50 == 0:
            # a device that keeps up: one request made available and used
            idx = (i // 50 + 1) & 0xFFFF
            struct.pack_into("=H", mem, AVAIL + 2, idx)
            struct.pack_into("=H", mem, USED + 2, idx)

    data = wire.pack(wire.GET_FEATURES, wire.FLAG_VERSION)
    result = round_trips(sock, data, rounds, warmup, before=move if ring else None)
    sock.close()
    if mem is not None:
        mem.close()
    return result


def _one(variant: str, rounds: int, tmp: str, ring: bool) -> dict:
    listen = os.path.join(tmp, "relay.sock")
    relay = proxy_command(listen, os.path.join(tmp, "server.sock"), *_args(variant, tmp))
    with process(relay):
        wait_for_socket(listen)
        cmd = [PY, "-m", "bench.overhead_bench", "client", "--connect", listen]
        cmd += ["--rounds", str(rounds), "--warmup", str(max(200, rounds // 20))]
        return run_json([*cmd, *(["--ring"] if ring else [])])


def _rows(variants: tuple[str, ...], reps: int, rounds: int, ring: bool) -> dict:
    """Interleaved repetitions; per variant the median p50/p99 and ratio to baseline A."""
    got: dict[str, list[dict]] = {v: [] for v in variants}
    ratios: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempdir() as tmp:
        peer = [PY, "-m", "bench.peers", "server", "--listen", os.path.join(tmp, "server.sock")]
        with process(peer, ready="ready"):
            for _ in range(reps):
                base = None
                for v in variants:
                    r = _one(v, rounds, tmp, ring)
                    got[v].append(r)
                    base = base or r
                    ratios[v].append((r["p50_us"] / base["p50_us"], r["p99_us"] / base["p99_us"]))
    return {
        v: {
            "p50_us": median([r["p50_us"] for r in got[v]]),
            "p99_us": median([r["p99_us"] for r in got[v]]),
            "p50_ratio": median([a for a, _ in ratios[v]]),
            "p99_ratio": median([b for _, b in ratios[v]]),
            "reps": reps,
            "rounds": rounds,
        }
        for v in variants
    }


def run(quick: bool, pin: int | None = None) -> dict:
    """Both tables; ``pin``: every process on that one CPU (see NOTES.md, proxy latency)."""
    from .proxy_bench import pinned

    reps, rounds = (3, 5000) if quick else (7, 50_000)
    with pinned(pin):
        return {
            "rings": _rows(RINGS, reps, rounds, ring=True),
            "rules": _rows(RULE_VARIANTS, reps, rounds, ring=False),
            "pin": pin,
        }


def table(r: dict) -> list[str]:
    """The report section: each variant's latency and its ratio to baseline A."""
    lines = [
        "## Proxy overhead: ring sampler and rules (round trip µs, 0 fds; issues 13, 14)",
        "",
        "Ratios are to baseline A of the same repetition; baseline B (the same command "
        "again) is the noise.",
        "",
        "| proxy | p50 | p99 | p50 / A | p99 / A |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "rings off A": "`-w --rings off` (A), one started vring",
        "rings off B": "`-w --rings off` (B, noise)",
        "rings on": "`-w --rings on` (100 ms)",
        "rings 10ms": "`-w --rings 10ms`",
        "no rules A": "`-q` (A)",
        "no rules B": "`-q` (B, noise)",
        "5 rules": "`-q` + 5 non-matching `--rule`",
    }
    for part in ("rings", "rules"):
        for v, x in (r.get(part) or {}).items():
            lines.append(
                f"| {labels.get(v, v)} | {x['p50_us']:.1f} | {x['p99_us']:.1f} | "
                f"{x['p50_ratio']:.2f} | {x['p99_ratio']:.2f} |"
            )
    first = next(iter((r.get("rings") or r.get("rules") or {}).values()), {})
    pin = f", all on CPU {r['pin']}" if r.get("pin") is not None else ""
    lines += [
        "",
        f"(median of {first.get('reps')} repetitions of {first.get('rounds')} round trips{pin})",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead_bench")
    sub = p.add_subparsers(dest="role")
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--rounds", type=int, default=2000)
    c.add_argument("--warmup", type=int, default=200)
    c.add_argument("--ring", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--pin", type=int, metavar="CPU")
    args = p.parse_args(argv)
    if args.role == "client":
        print(json.dumps(client(args.connect, args.rounds, args.warmup, args.ring)))
        return 0
    print("\n".join(table(run(not args.full, args.pin))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
