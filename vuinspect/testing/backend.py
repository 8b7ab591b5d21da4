"""A minimal vhost-user back-end: correct replies, fds, and the back-end channel.

Usable in-process (``Backend(sock).serve()``) or as a program::

    python -m vuinspect.testing.backend --listen PATH        # serves every connection
    python -m vuinspect.testing.backend --connect PATH       # like dpdk-testpmd client=1
    python -m vuinspect.testing.backend --listen PATH --stall  # never replies

Replies carry flags exactly 0x5.  After ``SET_BACKEND_REQ_FD`` it can send
back-end channel requests (config change, host notifier with an fd) with
NEED_REPLY and records the front-end's acks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..protocol.features import protocol_mask, virtio_mask
from . import wire
from .wire import Msg

FEATURES = virtio_mask("VERSION_1", "PROTOCOL_FEATURES")
PROTOCOL_FEATURES = protocol_mask(
    "MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER"
)


class Backend:
    """Serves one front-end connection; records every message it got."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        stall: bool = False,
        backend_requests: int = 0,
        notifier_fd: bool = False,
    ) -> None:
        self.sock = sock
        self.stall = stall
        self.backend_requests = backend_requests
        self.notifier_fd = notifier_fd
        self.received: list[Msg] = []
        self.sent: list[bytes] = []
        self.channel: socket.socket | None = None
        #: Replies the front-end sent on the back-end channel.
        self.channel_replies: list[Msg] = []
        #: Inodes of the fds we sent on the back-end channel, per request.
        self.channel_sent_inodes: list[list[tuple[int, int]]] = []
        self.channel_done = threading.Event()
        self.error: BaseException | None = None
        self._channel_thread: threading.Thread | None = None

    def serve(self) -> None:
        """Handle messages until the front-end closes (or an error)."""
        try:
            while True:
                msg = wire.recv_msg(self.sock)
                if msg is None:
                    break
                self.received.append(msg)
                self._handle(msg)
        except (OSError, EOFError) as exc:
            self.error = exc
        finally:
            if self._channel_thread is not None:
                self._channel_thread.join(5)
            if self.channel is not None:
                self.channel.close()
            self.sock.close()

    def _reply(self, msg: Msg, payload: bytes) -> None:
        data = wire.pack(msg.request, wire.REPLY_FLAGS, payload)
        self.sent.append(data)
        wire.send_raw(self.sock, data)

    def _handle(self, msg: Msg) -> None:
        req = msg.request
        if req == wire.SET_BACKEND_REQ_FD and msg.fds:
            self.channel = socket.socket(fileno=msg.fds.pop(0))
            if self.backend_requests or self.notifier_fd:
                self._channel_thread = threading.Thread(target=self._use_channel, daemon=True)
                self._channel_thread.start()
        msg.close_fds()
        if self.stall:
            return
        reply: bytes | None = None
        if req == wire.GET_FEATURES:
            reply = wire.U64.pack(FEATURES)
        elif req == wire.GET_PROTOCOL_FEATURES:
            reply = wire.U64.pack(PROTOCOL_FEATURES)
        elif req == wire.GET_QUEUE_NUM:
            reply = wire.U64.pack(1)
        elif req == wire.GET_MAX_MEM_SLOTS:
            reply = wire.U64.pack(8)
        elif req == wire.GET_VRING_BASE:
            index = struct.unpack_from("=I", msg.payload)[0] if len(msg.payload) >= 4 else 0
            reply = struct.pack("=II", index, 0)
        elif req == wire.GET_CONFIG:
            reply = msg.payload  # offset, size, flags + zeroed config space
        elif msg.flags & wire.FLAG_NEED_REPLY:
            reply = wire.U64.pack(0)
        if reply is not None:
            self._reply(msg, reply)

    def _use_channel(self) -> None:
        """Send back-end channel requests with NEED_REPLY and collect the acks."""
        assert self.channel is not None
        try:
            for _ in range(self.backend_requests):
                wire.send_raw(
                    self.channel,
                    wire.pack(
                        wire.BACKEND_CONFIG_CHANGE_MSG, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY
                    ),
                )
                self.channel_sent_inodes.append([])
                self._channel_reply()
            if self.notifier_fd:
                fd = wire.memfd("host-notifier", 4096)
                try:
                    payload = struct.pack("=QQQ", 0, 4096, 0)
                    self.channel_sent_inodes.append([wire.fd_inode(fd)])
                    wire.send_raw(
                        self.channel,
                        wire.pack(
                            wire.BACKEND_VRING_HOST_NOTIFIER_MSG,
                            wire.FLAG_VERSION | wire.FLAG_NEED_REPLY,
                            payload,
                        ),
                        [fd],
                    )
                finally:
                    os.close(fd)
                self._channel_reply()
        except (OSError, EOFError) as exc:
            self.error = exc
        finally:
            self.channel_done.set()

    def _channel_reply(self) -> None:
        assert self.channel is not None
        reply = wire.recv_msg(self.channel)
        if reply is None:
            raise EOFError("front-end closed the back-end channel")
        reply.close_fds()
        self.channel_replies.append(reply)


class BackendServer:
    """A listening test back-end on a thread: every accepted connection is kept in ``conns``
    and passed to :meth:`handle`, which serves it with a recording :class:`Backend` (``kw``)
    on its own thread.  Tests whose back-end must misbehave (never read, keep fds, hold the
    first connection) override :meth:`handle` and :meth:`close`."""

    def __init__(self, path: str, **kw: Any) -> None:
        self.path = path
        self.listener = wire.listen(path)
        self.kw = kw
        self.conns: list[socket.socket] = []
        self.backends: list[Backend] = []
        self.threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        be = Backend(conn, **self.kw)
        self.backends.append(be)
        self.spawn(be.serve)

    def spawn(self, target: Callable[..., object], *args: object) -> threading.Thread:
        """Run ``target(*args)`` on a daemon thread that :meth:`join` waits for."""
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self, timeout: float = 5.0) -> None:
        for t in list(self.threads):
            t.join(timeout)

    def close(self) -> None:
        """Stop accepting and remove the socket path (served connections end on their own)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accept.join(2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def serve_forever(listener: socket.socket, **kw: Any) -> None:
    """Accept connections and serve each on its own thread (for load tests)."""
    while True:
        conn, _ = listener.accept()
        t = threading.Thread(target=lambda c=conn: Backend(c, **kw).serve(), daemon=True)
        t.start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vuinspect.testing.backend", description=__doc__.splitlines()[0]
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="PATH")
    where.add_argument("--connect", metavar="PATH")
    p.add_argument("--stall", action="store_true", help="never reply")
    p.add_argument(
        "--once", action="store_true", help="with --listen: serve one connection, then exit"
    )
    p.add_argument(
        "--backend-requests",
        type=int,
        default=0,
        help="config-change requests to send on the back-end channel",
    )
    p.add_argument(
        "--notifier-fd",
        action="store_true",
        help="also send a host-notifier request with a memfd on the back-end channel",
    )
    args = p.parse_args(argv)
    kw = {
        "stall": args.stall,
        "backend_requests": args.backend_requests,
        "notifier_fd": args.notifier_fd,
    }
    with contextlib.suppress(KeyboardInterrupt):
        if args.connect:
            sock = wire.connect(args.connect, retries=100)
            print(f"connected to {args.connect}", file=sys.stderr, flush=True)
            Backend(sock, **kw).serve()
            return 0
        listener = wire.listen(args.listen)
        print(f"listening on {args.listen}", file=sys.stderr, flush=True)
        if args.once:
            conn, _ = listener.accept()
            Backend(conn, **kw).serve()
        else:
            serve_forever(listener, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
