"""A minimal vhost-user front-end: a QEMU-like handshake, fds, round trips, raw bytes.

Usable in-process (``Frontend(sock).handshake()``) or as a program that prints
round-trip latencies as JSON::

    python -m vuinspect.testing.frontend --connect PATH --rounds 10000 [--fds]
    python -m vuinspect.testing.frontend --listen PATH ...   # QEMU server=on style

It answers back-end channel requests (acks with flags 0x5) on a thread once
``open_backend_channel()`` has passed a socket in ``SET_BACKEND_REQ_FD``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time

from ..protocol.features import protocol_mask
from . import wire
from .wire import Msg

#: Requests that always get a reply (PROTOCOL.md §1.5), among those the peer sends.
ALWAYS_REPLY = {
    wire.GET_FEATURES,
    wire.GET_PROTOCOL_FEATURES,
    wire.GET_QUEUE_NUM,
    wire.GET_VRING_BASE,
    wire.GET_CONFIG,
    wire.GET_MAX_MEM_SLOTS,
}


class Frontend:
    """Drives one connection; records what it sent (bytes + fd inodes) and received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[tuple[bytes, list[tuple[int, int]]]] = []
        self.received: list[Msg] = []
        self.channel: socket.socket | None = None
        self.channel_received: list[Msg] = []
        self.channel_sent: list[bytes] = []
        self._channel_thread: threading.Thread | None = None

    # -- sending -----------------------------------------------------------------
    def send(
        self,
        request: int,
        payload: bytes = b"",
        *,
        flags: int = wire.FLAG_VERSION,
        fds: list[int] | tuple[int, ...] = (),
    ) -> bytes:
        data = wire.pack(request, flags, payload)
        self.send_raw(data, fds)
        return data

    def send_raw(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        """Arbitrary bytes (malformed on purpose, several messages at once ...) in one sendmsg."""
        self.sent.append((data, [wire.fd_inode(fd) for fd in fds]))
        wire.send_raw(self.sock, data, fds)

    def recv(self) -> Msg:
        msg = wire.recv_msg(self.sock)
        if msg is None:
            raise EOFError("back-end closed the connection")
        msg.close_fds()
        self.received.append(msg)
        return msg

    def call(
        self,
        request: int,
        payload: bytes = b"",
        *,
        fds: list[int] | tuple[int, ...] = (),
        need_reply: bool = False,
    ) -> Msg | None:
        """Send a request; wait for its reply when one is due."""
        flags = wire.FLAG_VERSION | (wire.FLAG_NEED_REPLY if need_reply else 0)
        self.send(request, payload, flags=flags, fds=fds)
        if need_reply or request in ALWAYS_REPLY:
            return self.recv()
        return None

    # -- a QEMU-like session --------------------------------------------------------
    def handshake(
        self,
        *,
        regions: int = 1,
        region_size: int = 1 << 20,
        queues: int = 1,
        backend_channel: bool = False,
    ) -> None:
        """Roughly what QEMU sends when a device starts (PROTOCOL.md §6.1-6.2)."""
        features = self.call(wire.GET_FEATURES)
        assert features is not None
        self.call(wire.GET_PROTOCOL_FEATURES)
        self.call(
            wire.SET_PROTOCOL_FEATURES,
            wire.U64.pack(
                protocol_mask("MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIG", "BACKEND_SEND_FD")
            ),
        )
        self.call(wire.GET_QUEUE_NUM)
        if backend_channel:
            self.open_backend_channel()
        self.call(wire.SET_OWNER)
        self.call(wire.SET_FEATURES, wire.U64.pack(features.u64), need_reply=True)
        self.set_mem_table(regions, region_size)
        for q in range(queues):
            self.call(wire.SET_VRING_NUM, struct.pack("=II", q, 256))
            self.call(wire.SET_VRING_ADDR, struct.pack("=IIQQQQ", q, 0, 0x1000, 0x3000, 0x2000, 0))
            self.call(wire.SET_VRING_BASE, struct.pack("=II", q, 0))
            self.set_vring_fd(wire.SET_VRING_KICK, q)
            self.set_vring_fd(wire.SET_VRING_CALL, q)
            self.call(wire.SET_VRING_ENABLE, struct.pack("=II", q, 1))

    def set_mem_table(self, regions: int = 1, region_size: int = 1 << 20) -> None:
        fds = [wire.memfd(f"guest-ram{i}", region_size) for i in range(regions)]
        try:
            payload = struct.pack("=II", regions, 0) + b"".join(
                struct.pack(
                    "=QQQQ", i * region_size, region_size, 0x7F0000000000 + i * region_size, 0
                )
                for i in range(regions)
            )
            self.call(wire.SET_MEM_TABLE, payload, fds=fds, need_reply=True)
        finally:
            for fd in fds:
                os.close(fd)

    def set_vring_fd(self, request: int, index: int, *, need_reply: bool = True) -> None:
        fd = wire.eventfd()
        try:
            self.call(request, wire.U64.pack(index), fds=[fd], need_reply=need_reply)
        finally:
            os.close(fd)

    def stop_queues(self, queues: int = 1) -> None:
        for q in range(queues):
            self.call(wire.GET_VRING_BASE, struct.pack("=II", q, 0))

    def round_trips(self, n: int, *, with_fd: bool = False) -> list[int]:
        """``n`` request/reply pairs; returns each round trip in ns."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            if with_fd:
                self.set_vring_fd(wire.SET_VRING_CALL, 0)
            else:
                self.call(wire.GET_FEATURES)
            out.append(time.perf_counter_ns() - t0)
        return out

    # -- back-end channel --------------------------------------------------------------
    def open_backend_channel(self) -> None:
        """Pass one end of a socket pair in SET_BACKEND_REQ_FD and answer requests on ours."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = ours
        try:
            self.call(wire.SET_BACKEND_REQ_FD, fds=[theirs.fileno()], need_reply=True)
        finally:
            theirs.close()
        self._channel_thread = threading.Thread(target=self._serve_channel, daemon=True)
        self._channel_thread.start()

    def _serve_channel(self) -> None:
        assert self.channel is not None
        try:
            while True:
                msg = wire.recv_msg(self.channel)
                if msg is None:
                    return
                msg.close_fds()
                self.channel_received.append(msg)
                if msg.flags & wire.FLAG_NEED_REPLY:
                    data = wire.pack(msg.request, wire.REPLY_FLAGS, wire.U64.pack(0))
                    self.channel_sent.append(data)
                    wire.send_raw(self.channel, data)
        except (OSError, EOFError):
            return

    def close(self) -> None:
        """Close like QEMU: the main socket, then the back-end channel."""
        self.sock.close()
        if self.channel is not None:
            self.channel.close()
        if self._channel_thread is not None:
            self._channel_thread.join(5)


def _percentile(values: list[int], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vuinspect.testing.frontend", description=__doc__.splitlines()[0]
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="PATH")
    where.add_argument("--listen", metavar="PATH")
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument(
        "--fds", action="store_true", help="each round trip carries an eventfd (SET_VRING_CALL)"
    )
    p.add_argument("--backend-channel", action="store_true", help="pass a back-end channel socket")
    p.add_argument(
        "--wait-channel",
        type=float,
        default=0.0,
        help="seconds to keep answering back-end channel requests before closing",
    )
    args = p.parse_args(argv)
    if args.connect:
        sock = wire.connect(args.connect, retries=100)
    else:
        listener = wire.listen(args.listen)
        print(f"listening on {args.listen}", file=sys.stderr, flush=True)
        sock, _ = listener.accept()
        listener.close()
    fe = Frontend(sock)
    fe.handshake(backend_channel=args.backend_channel)
    fe.round_trips(args.warmup, with_fd=args.fds)
    times = fe.round_trips(args.rounds, with_fd=args.fds)
    fe.stop_queues()
    if args.wait_channel:
        time.sleep(args.wait_channel)
    fe.close()
    result = {
        "rounds": len(times),
        "p50_us": _percentile(times, 0.5),
        "p99_us": _percentile(times, 0.99),
        "mean_us": statistics.fmean(times) / 1000 if times else 0.0,
        "backend_channel_requests": len(fe.channel_received),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
