"""Peers that attack the proxy's resources (issue 11, items 1 and 11).

fd hoarding: a header announcing a 64 KiB payload, then 1-byte sends of 253
fds each; the proxy may hold only what one message can carry.  Reconnect
storm: a client that reconnects as soon as it is closed, while the --connect
target is missing, must not spin the proxy (nor fill its log and capture).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.frames import event_info
from vuinspect.protocol.requests import SCM_MAX_FD
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer

from .conftest import Procs, fd_count, log_text, report, start_proxy, stop, wait_line, wait_until

FD_LIMIT = 1024


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def start_limited_proxy(procs: Procs, listen: str, connect: str, *extra: str) -> subprocess.Popen:
    """``vuinspect proxy -q`` with the usual 1024-fd limit (this machine's may be higher)."""
    return start_proxy(procs, listen, connect, *extra, preexec_fn=_low_fd_limit)


def cpu_s(pid: int) -> float:
    """User + system CPU time of the whole process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Backend(BackendServer):
    """A listening back-end that accepts and keeps its connections (reads on demand)."""

    def handle(self, conn: socket.socket) -> None:
        pass  # kept in ``conns`` for the test to read

    def close(self) -> None:
        super().close()
        for s in self.conns:
            s.close()


@pytest.fixture
def backend(sockdir: str) -> Iterator[Backend]:
    b = Backend(os.path.join(sockdir, "be.sock"))
    yield b
    b.close()


def hoard(sock: socket.socket, sends: int, fd: int, pid: int = 0) -> tuple[int, int]:
    """The attack: a header announcing 64 KiB, then 1-byte sends of 253 fds each.

    Returns how many sends went through before the proxy cut the connection,
    and the most fds process ``pid`` had open after a send.
    """
    sock.sendall(struct.pack("=III", 1, 1, 64 * 1024))
    done = peak = 0
    for _ in range(sends):
        try:
            wire.send_raw(sock, b"\0", [fd] * SCM_MAX_FD)
        except OSError:
            break
        done += 1
        time.sleep(0.01)  # one recvmsg per send on the proxy's side
        if pid:
            peak = max(peak, fd_count(pid))
    return done, peak


def works(px: str, backend: Backend) -> None:
    """A fresh connection is accepted and relayed: the back-end gets its message."""
    before = len(backend.conns)
    fe = wire.connect(px)
    try:
        fe.sendall(wire.pack(wire.GET_FEATURES))
        wait_until(lambda: len(backend.conns) > before, 5, "the fresh connection at the back-end")
        be = backend.conns[-1]
        be.settimeout(5)
        assert be.recv(100) == wire.pack(wire.GET_FEATURES)
    finally:
        fe.close()


def notes(path: str) -> list[str]:
    return [str(event_info(f).get("text", "")) for f in read_frames(path) if f.kind == "note"]


def test_fd_hoarding_is_bounded(sockdir: str, procs: Procs, backend: Backend) -> None:
    """20 sends of 253 fds into one incomplete message: the proxy keeps at most 253 (plus
    the 253 of the chunk it is reading), closes the rest at once and cuts the connection."""
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    proxy = start_limited_proxy(procs, px, os.path.join(sockdir, "be.sock"), "-w", cap)
    base = fd_count(proxy.pid)
    fd = wire.eventfd()
    attacker = wire.connect(px)
    peak = base
    try:
        sent, during = hoard(attacker, 20, fd, proxy.pid)
        peak = max(peak, during)
        # while (or after) the attack: other connections are accepted and relayed
        works(px, backend)
        peak = max(peak, fd_count(proxy.pid))
        # the peer insisted: its connection is cut (EOF, or a reset with its bytes unread)
        attacker.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert attacker.recv(1) == b""
    finally:
        attacker.close()
        os.close(fd)
    # held: one message's worth; in flight for a moment: one received chunk's worth
    assert peak <= base + 2 * SCM_MAX_FD + 16, f"proxy holds {peak - base} fds beyond its baseline"
    wait_until(lambda: fd_count(proxy.pid) <= base + 4, 5, "the proxy's fds back to baseline")
    assert proxy.poll() is None
    assert stop(proxy) == 0
    texts = notes(cap)
    assert any("could not be forwarded" in t for t in texts), texts
    assert any("connection cut" in t for t in texts), texts
    report("hostile_fd_hoarding", sends_accepted=sent, proxy_fds_base=base, proxy_fds_peak=peak)


def test_emfile_backs_off(sockdir: str, procs: Procs, backend: Backend) -> None:
    """Hoarders bring the proxy to its fd limit: accept backs off instead of spinning,
    says so once, and accepts again once fds are free."""
    px = os.path.join(sockdir, "px.sock")
    proxy = start_limited_proxy(procs, px, os.path.join(sockdir, "be.sock"))
    fd = wire.eventfd()
    hoarders: list[socket.socket] = []
    waiting: socket.socket | None = None
    try:
        # each hoarder: 2 fds of relaying + one message's worth of fds held
        for _ in range(FD_LIMIT // SCM_MAX_FD + 1):
            s = wire.connect(px)
            hoarders.append(s)
            hoard(s, 1, fd)
        wait_until(lambda: fd_count(proxy.pid) >= FD_LIMIT - 8, 5, "the proxy at its fd limit")
        waiting = wire.connect(px)  # queued in the backlog: accept() fails with EMFILE
        time.sleep(0.2)
        c0, t0 = cpu_s(proxy.pid), time.monotonic()
        time.sleep(1.0)
        busy = (cpu_s(proxy.pid) - c0) / (time.monotonic() - t0)
        assert busy < 0.25, f"the proxy used {busy:.0%} of a core while it could not accept"
        wait_line(proxy, "cannot accept connections", 2)
    finally:
        for s in hoarders:
            s.close()
        os.close(fd)
    # fds are free again: the waiting connection and a new one are relayed
    assert waiting is not None
    waiting.sendall(wire.pack(wire.GET_FEATURES))
    # which of the back-end's connections is the waiting one is a race: the closed hoarders'
    # are relayed too (their header and byte), so the message is looked for on all of them.
    # How many hoarders reach the back-end is a race as well (CI): one accepted when no fd
    # was left for its upstream socket waits in _reach and gives up when it hangs up.
    got: dict[int, bytes] = {}

    def relayed() -> bool:
        for i, conn in enumerate(backend.conns):
            with contextlib.suppress(BlockingIOError, OSError):
                got[i] = got.get(i, b"") + conn.recv(100, socket.MSG_DONTWAIT)
        return wire.pack(wire.GET_FEATURES) in got.values()

    wait_until(relayed, 10, "the waiting connection's GET_FEATURES at the back-end")
    works(px, backend)
    waiting.close()
    # said once (a hoarder accepted with no fd left for its upstream socket has a line of
    # its own when it gives up: "could not connect ...: Too many open files")
    log = log_text(proxy)
    assert log.count("cannot accept connections") == 1, log
    line = next(x for x in log.splitlines() if "cannot accept connections" in x)
    assert "Too many open files" in line, log
    assert stop(proxy) == 0
    report("hostile_emfile_backoff", hoarders=len(hoarders), proxy_cpu_while_full=round(busy, 3))


# -- reconnect storm (item 11) --------------------------------------------------------------------
def reconnect_loop(px: str, seconds: float) -> int:
    """A client that reconnects as soon as it is closed, as dpdk-testpmd ``client=1`` does.

    Returns how many connections it made.
    """
    made = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            s = wire.connect(px)
        except OSError:
            continue
        made += 1
        s.settimeout(left)
        with contextlib.suppress(OSError):
            s.recv(1)
        s.close()
    return made


def coalesced(texts: list[str]) -> list[int]:
    """The counts of the proxy's 'N more connection(s)' lines or notes."""
    return [
        int(t.split(" more connection(s)")[0].rsplit(" ", 1)[-1])
        for t in texts
        if " more connection(s)" in t
    ]


def opens(path: str) -> int:
    return sum(1 for f in read_frames(path) if f.kind == "open")


def test_reconnect_storm_python_client(sockdir: str, procs: Procs) -> None:
    """--connect target missing: an immediately reconnecting client makes a connection
    every --connect-timeout (default 3 s), not thousands a second; one line, one note."""
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    proxy = start_limited_proxy(procs, px, os.path.join(sockdir, "missing.sock"), "-w", cap)
    made = reconnect_loop(px, 4.0)
    assert made <= 3, f"{made} connections in 4 s"
    assert log_text(proxy).count("could not connect") == 1, log_text(proxy)
    assert stop(proxy) == 0
    log = log_text(proxy).splitlines()
    assert len([ln for ln in log if "could not connect" in ln]) <= 2, log
    assert 1 + sum(coalesced(log)) == made, log
    assert opens(cap) == 1
    assert 1 + sum(coalesced(notes(cap))) == made
    report(
        "hostile_reconnect_storm_python", connections_in_4s=made, capture_bytes=os.path.getsize(cap)
    )


@contextlib.contextmanager
def small_testpmd(sock: str, log_dir: str) -> Iterator[None]:
    """dpdk-testpmd with a small net_vhost client port on ``sock`` (runners.testpmd), or a skip."""
    from vuinspect.demo import runners

    try:
        runners.require("dpdk-testpmd")
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    with runners.testpmd(Path(sock), Path(log_dir), client=True, small=True):
        yield


def test_reconnect_storm_testpmd(sockdir: str, procs: Procs) -> None:
    """The real client of the report: dpdk-testpmd net_vhost client=1, target missing."""
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    proxy = start_limited_proxy(procs, px, os.path.join(sockdir, "missing.sock"), "-w", cap)
    t0 = time.monotonic()
    with small_testpmd(px, sockdir):
        time.sleep(5.0)
    seconds = time.monotonic() - t0
    assert stop(proxy) == 0
    log = log_text(proxy).splitlines()
    made = 1 + sum(coalesced(notes(cap)))
    assert made / seconds <= 1.0, f"{made} connections in {seconds:.1f} s"
    assert opens(cap) == 1
    assert len([ln for ln in log if "could not connect" in ln]) <= 2, log
    report(
        "hostile_reconnect_storm_testpmd",
        connections=made,
        seconds=round(seconds, 1),
        capture_bytes=os.path.getsize(cap),
    )
