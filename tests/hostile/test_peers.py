"""Hostile live peers through ``vuinspect proxy`` (F audit): what they can make the proxy hold.

Each test runs the real proxy as its own process with the usual 1024-fd limit
and in-repo peers (vuinspect.testing.wire); sockets live in a temp dir, the
proxy is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer
from vuinspect.testing.procs import proxy_command, stop, wait_until

pytestmark = pytest.mark.timeout(60)

FD_LIMIT = 1024


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.fixture
def sockdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="vu-hostile-") as d:
        yield d


class HoardingBackend(BackendServer):
    """A back-end that keeps every fd it is sent (a back-end channel socket included)."""

    def __init__(self, path: str) -> None:
        self.kept: list[wire.Msg] = []
        self.got: list[bytes] = []
        super().__init__(path)

    def handle(self, conn: socket.socket) -> None:
        self.spawn(self._serve, conn)

    def _serve(self, s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while (msg := wire.recv_msg(s)) is not None:
                self.got.append(msg.raw)
                self.kept.append(msg)

    def close(self) -> None:
        super().close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for m in self.kept:
            m.close_fds()


@pytest.fixture
def proxy(sockdir: str) -> Iterator[tuple[subprocess.Popen, str, HoardingBackend]]:
    be = HoardingBackend(os.path.join(sockdir, "be.sock"))
    px = os.path.join(sockdir, "px.sock")
    p = subprocess.Popen(
        proxy_command(px, be.path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_low_fd_limit,
    )
    try:
        wait_until(lambda: os.path.exists(px) or p.poll() is not None, 20, "the proxy to listen")
        assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
        yield p, px, be
    finally:
        stop(p, timeout=10, check=False)
        if p.stderr:
            p.stderr.close()
        be.close()


def test_backend_channels_a_connection_opens_are_bounded(proxy) -> None:
    """600 SET_BACKEND_REQ_FD on one connection to a back-end that keeps every socket.

    Before af9c97c (proxy/server.py: one relayed back-end channel per connection):
    the proxy held 2 fds and a thread per message (1022 fds, 511 threads at 600)
    and a fresh connection could not be relayed.
    """
    p, px, be = proxy
    base_fds, base_threads = fds_of(p.pid), threads_of(p.pid)
    fe = wire.connect(px)
    ours = []
    try:
        for _ in range(600):
            a, b = socket.socketpair()
            wire.send_raw(fe, wire.pack(wire.SET_BACKEND_REQ_FD), [b.fileno()])
            b.close()
            ours.append(a)  # the front-end keeps its end: the channel stays open on its side
        wait_until(lambda: len(be.got) >= 600, 20, "the 600 messages at the back-end")
        peak_fds, peak_threads = fds_of(p.pid), threads_of(p.pid)
        # another connection is still relayed
        fresh = wire.connect(px)
        with fresh:
            fresh.sendall(wire.pack(wire.GET_FEATURES))
            wait_until(
                lambda: wire.pack(wire.GET_FEATURES) in be.got, 3, "a fresh connection relayed"
            )
    finally:
        fe.close()
        for a in ours:
            a.close()
    assert peak_fds <= base_fds + 64, f"proxy fds {base_fds} -> {peak_fds}"
    assert peak_threads <= base_threads + 32, f"proxy threads {base_threads} -> {peak_threads}"
