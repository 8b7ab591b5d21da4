"""Faults around one long-lived ``vuinspect proxy``: dead, stuck and half-closing peers.

All tests of this module share one proxy process (capturing to a file), as a
proxy left running next to a VM would see them one after the other; the last
test checks that after all of it the proxy's fd count is back to its
baseline, its memory stayed bounded and its capture reads back clean.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from vuinspect.capture import CaptureReader
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import busy_frontend_args

from .conftest import (
    Procs,
    fd_count,
    log_text,
    report,
    rss_kib,
    scaled,
    settle_fds,
    start_backend,
    start_proxy,
    stop,
    wait_until,
)

pytestmark = pytest.mark.timeout(scaled(300, 3600))

#: How much the proxy's resident memory may grow over the whole module.
RSS_BOUND_KIB = 32 * 1024


@dataclass
class Env:
    dir: str
    procs: Procs
    px: str
    be: str
    cap: str
    proxy: object = None
    fds0: int = 0
    rss0: int = 0
    connections: int = 0
    numbers: dict[str, object] = field(default_factory=dict)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    d = tempfile.mkdtemp(dir="/tmp", prefix="vuf-")
    procs = Procs(d)
    e = Env(
        d,
        procs,
        os.path.join(d, "px.sock"),
        os.path.join(d, "be.sock"),
        os.path.join(d, "faults.pcapng"),
    )
    # reconnects while the back-end is down wait 0.2 s for it (not the default 3 s)
    e.proxy = start_proxy(procs, e.px, e.be, "-w", e.cap, "--connect-timeout", "0.2")
    time.sleep(0.2)
    e.fds0, e.rss0 = fd_count(e.proxy.pid), rss_kib(e.proxy.pid)
    try:
        yield e
    finally:
        procs.kill_all()
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def assert_fds_back(env: Env, what: str) -> int:
    n = settle_fds(env.proxy.pid, env.fds0)
    assert n == env.fds0, (
        f"after {what}: proxy holds {n} fds, baseline {env.fds0}: "
        f"{sorted(os.readlink(f'/proc/{env.proxy.pid}/fd/{x}') for x in os.listdir(f'/proc/{env.proxy.pid}/fd'))}"
    )
    assert env.proxy.poll() is None, log_text(env.proxy)[-2000:]
    return n


def ends_promptly(sock: socket.socket, timeout: float = 5.0) -> str:
    """Read until the peer's end shows (EOF or reset); fail if it does not within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return "eof"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        raise AssertionError(
            f"no EOF within {timeout} s: the proxy left the peer hanging"
        ) from None


# -- back-end SIGKILLed and restarted ------------------------------------------------------------
def test_backend_killed_mid_message_and_restarted(env: Env) -> None:
    cycles = scaled(10, 100)
    refused = 0
    ends: dict[str, int] = {}
    for i in range(cycles):
        be = start_backend(env.procs, env.be)
        fe = Frontend(wire.connect(env.px, retries=100))
        env.connections += 1
        fe.handshake(regions=1, region_size=1 << 16)
        fe.round_trips(5, with_fd=True)
        pump: threading.Thread | None = None
        if i % 2 == 0:
            # half of a SET_MEM_TABLE (and its fd) is with the proxy when the back-end dies
            fd = wire.memfd("half", 4096)
            payload = struct.pack("=II", 1, 0) + struct.pack("=QQQQ", 0, 4096, 0x7F0000000000, 0)
            data = wire.pack(wire.SET_MEM_TABLE, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY, payload)
            fe.send_raw(data[:20], [fd])
            os.close(fd)
            time.sleep(0.02)
        else:
            # round trips in flight in both directions when the back-end dies
            def loop(fe: Frontend = fe) -> None:
                with contextlib.suppress(OSError, EOFError):
                    fe.round_trips(10**7, with_fd=True)

            pump = threading.Thread(target=loop, daemon=True)
            pump.start()
            time.sleep(0.05)
        os.kill(be.pid, signal.SIGKILL)
        be.wait(10)
        if pump is not None:
            pump.join(5)
            assert not pump.is_alive(), "front-end still blocked 5 s after the back-end died"
            end = "ended"
        else:
            end = ends_promptly(fe.sock)
        ends[end] = ends.get(end, 0) + 1
        fe.close()
        # reconnecting while the back-end is down: accepted, then closed, no hang
        s = wire.connect(env.px)
        env.connections += 1
        with contextlib.suppress(OSError):
            s.sendall(wire.pack(wire.GET_FEATURES))
        ends_promptly(s)
        s.close()
        refused += 1
    fds = assert_fds_back(env, f"{cycles} back-end kills")
    # the proxy's lines reach its log asynchronously: wait for the last one
    wait_until(
        lambda: log_text(env.proxy).count("could not connect") >= refused,
        10,
        f"{refused} 'could not connect' lines",
    )
    env.numbers["backend_kills"] = cycles
    report(
        "fault_backend_killed",
        cycles_survived=cycles,
        reconnects_while_down=refused,
        frontend_saw=ends,
        proxy_fds_baseline=env.fds0,
        proxy_fds_after=fds,
        proxy_rss_kib=rss_kib(env.proxy.pid),
    )


# -- front-end SIGKILLed -----------------------------------------------------------------------
def test_frontend_killed(env: Env) -> None:
    kills = scaled(3, 20)
    be = start_backend(env.procs, env.be)
    for i in range(kills):
        fe = env.procs.start(busy_frontend_args(env.px), "frontend")
        env.connections += 1
        # killed mid-traffic, not before it connected (a loaded machine starts Python slowly)
        wait_until(lambda: fd_count(env.proxy.pid) >= env.fds0 + 2, 30, "the connection")
        time.sleep(0.3 + 0.1 * (i % 3))
        assert fe.poll() is None, log_text(fe)
        os.kill(fe.pid, signal.SIGKILL)
        fe.wait(10)
        assert_fds_back(env, f"front-end kill {i + 1}")
    assert be.poll() is None  # the back-end saw a clean end of each connection and goes on
    os.kill(be.pid, signal.SIGKILL)
    be.wait(10)
    fds = assert_fds_back(env, "front-end kills")
    report("fault_frontend_killed", kills=kills, proxy_fds_baseline=env.fds0, proxy_fds_after=fds)


# -- a peer that stops reading -----------------------------------------------------------------
class StuckFirst(BackendServer):
    """A back-end that never reads its first connection and serves the later ones."""

    stuck: socket.socket | None = None

    def handle(self, conn: socket.socket) -> None:
        if self.stuck is None:
            self.stuck = conn
            return
        super().handle(conn)

    def close(self) -> None:
        super().close()
        if self.stuck is not None:
            self.stuck.close()


def test_backend_stops_reading(env: Env) -> None:
    """Back-pressure: the proxy stops reading too; memory and fds stay bounded; others go on."""
    seconds = scaled(2, 20)
    srv = StuckFirst(env.be)
    rss_before = rss_kib(env.proxy.pid)
    fe = wire.connect(env.px)
    env.connections += 1
    fe.settimeout(0.5)
    msg = wire.pack(wire.SET_CONFIG, payload=struct.pack("=III", 0, 4084, 0) + bytes(4084))
    sent = fds_sent = 0
    rss_peak = fds_peak = 0
    deadline = time.monotonic() + seconds
    blocked_at = None
    i = 0
    while blocked_at is None and time.monotonic() < deadline:
        try:
            if i % 16 == 0:
                fd = wire.memfd("stuck", 4096)
                try:
                    wire.send_raw(fe, msg, [fd])
                finally:
                    os.close(fd)
                fds_sent += 1
            else:
                fe.sendall(msg)
            sent += len(msg)
            i += 1
        except TimeoutError:
            blocked_at = time.monotonic()  # the kernel buffers are full: the proxy stopped reading
    assert blocked_at is not None, f"{sent} bytes in {seconds} s and the front-end never blocked"
    while time.monotonic() < max(deadline, blocked_at + 1.0):  # stays blocked, stays bounded
        rss_peak = max(rss_peak, rss_kib(env.proxy.pid))
        fds_peak = max(fds_peak, fd_count(env.proxy.pid))
        time.sleep(0.05)
    rss_peak = max(rss_peak, rss_kib(env.proxy.pid))
    fds_peak = max(fds_peak, fd_count(env.proxy.pid))
    # someone else's connection is not held up by the stuck one
    other = Frontend(wire.connect(env.px))
    env.connections += 1
    other.handshake()
    rt = other.round_trips(200, with_fd=True)
    other.close()
    assert len(rt) == 200
    grown = rss_peak - rss_before
    assert sent < 16 * 1024 * 1024, (
        f"{sent} bytes accepted from a front-end whose back-end reads nothing"
    )
    assert grown < 16 * 1024, f"proxy RSS grew {grown} KiB while the back-end did not read"
    assert fds_peak < env.fds0 + 64, f"proxy held {fds_peak} fds while stuck"
    # the stuck back-end goes away: everything of that connection is released
    srv.close()
    with contextlib.suppress(OSError):
        fe.close()
    fds = assert_fds_back(env, "a stuck back-end")
    report(
        "fault_backpressure",
        seconds_pushed=seconds,
        bytes_accepted=sent,
        fds_sent=fds_sent,
        proxy_rss_kib_before=rss_before,
        proxy_rss_kib_peak=rss_peak,
        rss_growth_kib=grown,
        proxy_fds_baseline=env.fds0,
        proxy_fds_peak=fds_peak,
        proxy_fds_after=fds,
        other_connection_round_trips=len(rt),
    )


# -- half-close ----------------------------------------------------------------------------------
def _serve_one(path: str, script) -> tuple[threading.Thread, list]:
    listener = wire.listen(path)
    seen: list = []

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        try:
            script(conn, seen)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            seen.append(exc)
        finally:
            conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


def test_half_close_both_ways(env: Env) -> None:
    # 1. the front-end shuts its write side: the back-end still gets the request, sees EOF,
    #    and its reply (sent after the EOF) still reaches the front-end.
    def reply_after_eof(conn: socket.socket, seen: list) -> None:
        msg = wire.recv_msg(conn)
        seen.append(msg.request)
        seen.append(wire.recv_msg(conn))  # None: EOF
        wire.send_raw(conn, wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack(7)))

    t, seen = _serve_one(env.be, reply_after_eof)
    fe = wire.connect(env.px)
    env.connections += 1
    fe.sendall(wire.pack(wire.GET_FEATURES))
    fe.shutdown(socket.SHUT_WR)
    fe.settimeout(5)
    reply = wire.recv_msg(fe)
    assert reply is not None and reply.u64 == 7
    assert wire.recv_msg(fe) is None
    fe.close()
    t.join(5)
    assert seen == [wire.GET_FEATURES, None]

    # 2. the back-end shuts its write side after replying: the front-end reads the reply and
    #    EOF, and what it sends afterwards still reaches the back-end.
    def shut_after_reply(conn: socket.socket, seen: list) -> None:
        msg = wire.recv_msg(conn)
        wire.send_raw(conn, wire.pack(msg.request, wire.REPLY_FLAGS, wire.U64.pack(9)))
        conn.shutdown(socket.SHUT_WR)
        later = wire.recv_msg(conn)
        seen.append((later.request, later.fds and len(later.fds)))
        later.close_fds()
        seen.append(wire.recv_msg(conn))

    t, seen = _serve_one(env.be, shut_after_reply)
    fe = wire.connect(env.px)
    env.connections += 1
    fe.settimeout(5)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert wire.recv_msg(fe).u64 == 9
    assert wire.recv_msg(fe) is None
    fd = wire.eventfd()
    wire.send_raw(fe, wire.pack(wire.SET_VRING_CALL, payload=wire.U64.pack(0)), [fd])
    os.close(fd)
    fe.close()
    t.join(5)
    assert seen == [(wire.SET_VRING_CALL, 1), None]
    fds = assert_fds_back(env, "half-closes")
    report("fault_half_close", directions=2, proxy_fds_after=fds)


# -- after all of it -------------------------------------------------------------------------------
def test_zz_proxy_after_all_faults(env: Env) -> None:
    fds = assert_fds_back(env, "all faults")
    rss = rss_kib(env.proxy.pid)
    assert rss - env.rss0 < RSS_BOUND_KIB, f"proxy RSS {env.rss0} -> {rss} KiB"
    assert stop(env.proxy) == 0
    text = log_text(env.proxy)
    assert "Traceback" not in text, text[-3000:]
    reader = CaptureReader(env.cap)
    conns = {f.conn for f in reader if f.kind == "open"}
    assert reader.error is None, reader.error
    assert len(conns) >= env.connections, f"{len(conns)} connections in the capture"
    report(
        "fault_summary",
        proxy_fds_baseline=env.fds0,
        proxy_fds_after=fds,
        proxy_rss_kib_baseline=env.rss0,
        proxy_rss_kib_after=rss,
        connections=len(conns),
        capture_frames=reader.frames_read,
    )
