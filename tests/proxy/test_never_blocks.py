"""The forwarding process never blocks on its outputs, and stops within ~2 s (GUIDE.md).

Real ``vuinspect proxy`` processes and raw peers.  What was already covered
elsewhere: a ``-w -`` pipe nobody reads (tests/reliability/test_capture_output.py),
summary lines nobody reads (same file), a Wireshark FIFO nobody reads
(tests/wireshark/test_extcap_engine.py), a slow in-process consumer
(test_lifecycle.py), a stop with a live connection (test_split.py, no time
bound).  Here: the TUI's feed, a viewer that stops reading (SIGSTOP: it neither
reads nor exits), and a stop while one peer reads nothing and another
connection is live.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import timed_stop

from .conftest import wait_until
from .test_command import run_backend, wait_line
from .test_split import _viewer_of

pytestmark = pytest.mark.timeout(90)
#: The stop's bound: ~2 s, with room for a loaded 2-core machine.
STOP_BOUND_S = 2.5


def _proxy(sockdir: str, procs: list, *argv: str) -> tuple[subprocess.Popen, Path]:
    """``vuinspect proxy ARGV`` with its stderr in a log, listening (SIGINT as a terminal's)."""
    log = Path(sockdir) / "proxy.log"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "vuinspect", "proxy", *argv],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    procs.append(proxy)
    wait_line(log, "listening on", proxy)
    return proxy, log


def _timed_stop(proxy: subprocess.Popen, sig: int) -> float:
    rc, took = timed_stop(proxy, sig, 20)
    assert rc == 0
    return took


class _Drain:
    """A back-end that reads and drops everything (counts the bytes)."""

    def __init__(self, path: str) -> None:
        self.listener = wire.listen(path)
        self.received = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while chunk := conn.recv(1 << 20):
                self.received += len(chunk)


class _StoppedViewer:
    """``vuinspect proxy --no-tui -w CAP`` whose summary-lines viewer is stopped (SIGSTOP:
    it neither reads its pipe nor exits), after 24 MiB went through: far beyond the
    pipe (1 MiB), within the viewer's 64 MiB cut-off."""

    COUNT = 384

    def __init__(self, sockdir: str, procs: list) -> None:
        be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
        self.cap = os.path.join(sockdir, "cap.pcapng")
        drain = _Drain(be)
        self.proxy, self.log = _proxy(
            sockdir, procs, "--listen", px, "--connect", be, "--no-tui", "-w", self.cap
        )
        self.viewer = _viewer_of(self.proxy.pid)
        os.kill(self.viewer, signal.SIGSTOP)
        self.fe = wire.connect(px)
        msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, b"\0" * (64 * 1024 - 12))
        for _ in range(self.COUNT):
            self.fe.sendall(msg)
        wait_until(lambda: drain.received >= self.COUNT * len(msg), 30, "all forwarded")
        self.forwarded = drain.received == self.COUNT * len(msg)

    def stop(self) -> float:
        """SIGTERM with the connection still open: how long the process took to end."""
        try:
            return _timed_stop(self.proxy, signal.SIGTERM)
        finally:
            self.fe.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.viewer, signal.SIGKILL)


def test_a_viewer_that_stops_reading_never_stalls_forwarding_or_the_capture(sockdir, procs) -> None:
    run = _StoppedViewer(sockdir, procs)
    assert run.forwarded
    run.stop()
    data = [f for f in read_frames(run.cap) if f.kind == "data"]
    assert len(data) == run.COUNT  # the stopped viewer held the -w file back in nothing
    assert "Traceback" not in run.log.read_text()


def test_the_stop_takes_2s_with_a_viewer_that_stopped_reading(sockdir, procs) -> None:
    """Before: 3.1 s (the recorder's close waited up to 1.5 s for the viewer's pipe, then
    the viewer's stop waited 1.5 s without progress: in series); now they overlap."""
    run = _StoppedViewer(sockdir, procs)
    took = run.stop()
    print(f"stop with a stopped viewer: {took:.2f} s")
    assert took < STOP_BOUND_S, f"stop took {took:.2f} s; log:\n{run.log.read_text()}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_stop_takes_2s_with_a_stalled_peer_and_a_live_connection(sockdir, procs, sig) -> None:
    """One back-end never reads (its socket and the proxy's backlog full, the front-end
    blocked in send); another connection is live and idle.  The signal ends the process
    within ~2 s, and both front-ends see their connection end."""
    stuck_path = os.path.join(sockdir, "stuck.sock")
    stuck = wire.listen(stuck_path)  # never accepts: the kernel queues the connection
    be = run_backend(sockdir, procs)
    px1, px2 = os.path.join(sockdir, "px1.sock"), os.path.join(sockdir, "px2.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    proxy, log = _proxy(
        sockdir,
        procs,
        *("--listen", px1, "--connect", stuck_path),
        *("--listen", px2, "--connect", be),
        *("--no-tui", "-q", "-w", cap),
    )
    blocked = wire.connect(px1)
    blocked.settimeout(0.5)
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, b"\0" * 4084)
    sent = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            blocked.sendall(msg)
        except TimeoutError:
            break  # the proxy stopped reading it: back-pressure reached the sender
        sent += len(msg)
    else:
        raise AssertionError(f"{sent} bytes and the front-end never blocked")
    live = Frontend(wire.connect(px2))
    live.handshake()
    live.round_trips(20)
    stop_s = _timed_stop(proxy, sig)
    print(f"{sent} bytes accepted before the front-end blocked; stop {stop_s:.2f} s")
    assert stop_s < STOP_BOUND_S, f"stop took {stop_s:.2f} s; log:\n{log.read_text()}"
    assert wire.recv_msg(live.sock) is None  # the live front-end sees its connection end
    blocked.settimeout(5)
    with contextlib.suppress(OSError):
        while blocked.recv(1 << 16):
            pass
    live.close()
    blocked.close()
    stuck.close()
    assert not os.path.exists(px1) and not os.path.exists(px2)
    text = log.read_text()
    assert "Traceback" not in text, text
    closes = [f for f in read_frames(cap) if f.kind == "close"]
    assert len(closes) == 2  # both connections' ends are in the capture
