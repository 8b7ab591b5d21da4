"""Lean vhost-user ping-pong peers for the latency and throughput benchmarks.

Separate processes (client, relay, server), as in a real deployment, so a
relay's cost shows up as added round-trip time:

    python -m bench.peers server --listen PATH
    python -m bench.peers client --connect PATH --rounds 20000 --fds 1
    python -m bench.peers blast  --connect PATH --messages 200000

The client prints one JSON object (round-trip ns percentiles or messages/s).
Messages look like QEMU's: SET_VRING_CALL with NEED_REPLY and one eventfd,
SET_MEM_TABLE with 8 memfds, GET_FEATURES with none.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

from vuinspect.testing import wire

ACK = wire.pack(0, wire.REPLY_FLAGS, wire.U64.pack(0))


def _request(n_fds: int) -> tuple[int, bytes]:
    if n_fds == 0:
        return wire.GET_FEATURES, b""
    if n_fds == 1:
        return wire.SET_VRING_CALL, wire.U64.pack(0)
    regions = b"".join(
        struct.pack("=QQQQ", i << 20, 1 << 20, 0x7F0000000000 + (i << 20), 0) for i in range(n_fds)
    )
    return wire.SET_MEM_TABLE, struct.pack("=II", n_fds, 0) + regions


def serve(path: str) -> int:
    """Reply to every request that wants one (GET_FEATURES, or NEED_REPLY set)."""
    listener = wire.listen(path)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        try:
            while True:
                msg = wire.recv_msg(sock)
                if msg is None:
                    break
                for fd in msg.fds:
                    os.close(fd)
                if msg.request == wire.GET_FEATURES:
                    sock.sendall(
                        wire.pack(msg.request, wire.REPLY_FLAGS, wire.U64.pack(1 << 32 | 1 << 30))
                    )
                elif msg.flags & wire.FLAG_NEED_REPLY:
                    sock.sendall(wire.pack(msg.request, wire.REPLY_FLAGS, wire.U64.pack(0)))
                elif msg.request == 0:  # the blast client's end marker
                    sock.sendall(ACK)
        except (OSError, EOFError):
            pass
        finally:
            sock.close()


def client(path: str, rounds: int, warmup: int, n_fds: int) -> dict:
    sock = wire.connect(path, retries=200)
    request, payload = _request(n_fds)
    flags = wire.FLAG_VERSION | (wire.FLAG_NEED_REPLY if request != wire.GET_FEATURES else 0)
    data = wire.pack(request, flags, payload)
    fds = [wire.eventfd() if n_fds == 1 else wire.memfd(f"bench{i}", 1 << 20) for i in range(n_fds)]
    result = round_trips(sock, data, rounds, warmup, fds)
    sock.close()
    for fd in fds:
        os.close(fd)
    return result


def round_trips(
    sock: socket.socket,
    data: bytes,
    rounds: int,
    warmup: int,
    fds: list[int] | tuple[int, ...] = (),
    before: Callable[[int], None] | None = None,
) -> dict:
    """Send ``data`` (with ``fds``) and wait for its reply, ``warmup + rounds`` times: the
    p50 and p99 round trip of the last ``rounds``, in µs.  ``before(i)`` runs, untimed,
    before round trip ``i`` (the ring the overhead client moves)."""
    times = []
    for i in range(warmup + rounds):
        if before is not None:
            before(i)
        t0 = time.perf_counter_ns()
        wire.send_raw(sock, data, fds)
        reply = wire.recv_msg(sock)
        t1 = time.perf_counter_ns()
        if reply is None or reply.flags != wire.REPLY_FLAGS:
            raise SystemExit(f"bad reply {reply}")
        if i >= warmup:
            times.append(t1 - t0)
    times.sort()
    return {
        "rounds": rounds,
        "p50_us": times[len(times) // 2] / 1000,
        "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] / 1000,
    }


def blast(path: str, messages: int) -> dict:
    """One-way SET_VRING_NUM messages back to back, then one acked end marker."""
    sock = wire.connect(path, retries=200)
    one = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256))
    batch = 64
    chunk = one * batch
    t0 = time.perf_counter_ns()
    sent = 0
    while sent < messages:
        n = min(batch, messages - sent)
        sock.sendall(chunk if n == batch else one * n)
        sent += n
    sock.sendall(wire.pack(0, wire.FLAG_VERSION))
    reply = wire.recv_msg(sock)
    t1 = time.perf_counter_ns()
    sock.close()
    if reply is None:
        raise SystemExit("no end-marker reply")
    return {"messages": messages, "msgs_per_s": messages / ((t1 - t0) / 1e9)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--rounds", type=int, default=10000)
    c.add_argument("--warmup", type=int, default=500)
    c.add_argument("--fds", type=int, default=0, choices=(0, 1, 8))
    b = sub.add_parser("blast")
    b.add_argument("--connect", required=True)
    b.add_argument("--messages", type=int, default=100000)
    args = p.parse_args(argv)
    if args.role == "server":
        try:
            return serve(args.listen)
        except KeyboardInterrupt:
            return 0
    if args.role == "client":
        result = client(args.connect, args.rounds, args.warmup, args.fds)
    else:
        result = blast(args.connect, args.messages)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
