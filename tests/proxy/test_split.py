"""Summary lines and the TUI come from a viewer process; forwarding runs in its child.

The child (engine.py) must outlive a viewer that dies, and a dead child must
not leave the viewer hanging or pretending all went well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend

from .conftest import children
from .test_command import run_backend, start, stop, wait_line

pytestmark = pytest.mark.timeout(60)


def _engine_of(pid: int) -> int:
    """The pid of the forwarding child of viewer ``pid``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in children(pid):
            if b"--engine-fds" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return child
        time.sleep(0.05)
    raise AssertionError(f"no engine child under {pid}")


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def test_viewer_killed_forwarding_and_capture_go_on(sockdir, procs) -> None:
    from vuinspect.capture import read_frames

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    log = Path(sockdir) / "proxy.log"
    out = Path(sockdir) / "proxy.out"
    viewer = start(["vuinspect", "proxy", "--listen", px, "--connect", be, "--no-tui", "-w", cap],
                   log, stdout=open(out, "wb"))  # noqa: SIM115
    procs.append(viewer)
    wait_line(log, f"listening on {px} -> {be}", viewer)
    engine = _engine_of(viewer.pid)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    fe.close()
    deadline = time.monotonic() + 5
    while "SET_MEM_TABLE" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "SET_MEM_TABLE" in out.read_text()  # the viewer decoded the child's stream
    viewer.kill()
    viewer.wait()
    # The VM must not notice: the child still forwards, and still captures.
    fe = Frontend(wire.connect(px))
    fe.handshake()
    fe.round_trips(20)
    fe.close()
    time.sleep(0.3)
    os.kill(engine, signal.SIGTERM)
    assert _gone(engine)
    assert not os.path.exists(px)
    frames = list(read_frames(cap))
    assert len([f for f in frames if f.kind == "open"]) == 2
    assert frames[-1].kind == "close"
    assert "Traceback" not in log.read_text()


def test_engine_killed_the_viewer_says_so(sockdir, procs) -> None:
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "proxy.log"
    viewer = start(["vuinspect", "proxy", "--listen", px, "--connect", be, "--no-tui"], log)
    procs.append(viewer)
    wait_line(log, "listening on", viewer)
    engine = _engine_of(viewer.pid)
    os.kill(engine, signal.SIGKILL)
    assert viewer.wait(15) == 1
    assert log.read_text().splitlines()[-1] == (
        "vuinspect proxy: the forwarding process ended unexpectedly (signal SIGKILL)")


def test_engine_cannot_start_one_error_line(sockdir) -> None:
    """Errors found by the child (here: the capture target) are reported once, exit code 1."""
    px = os.path.join(sockdir, "px.sock")
    res = subprocess.run([sys.executable, "-m", "vuinspect", "proxy", "--listen", px, "--connect",
                          os.path.join(sockdir, "be.sock"), "--no-tui", "-w", "/dev/full"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "vuinspect proxy: cannot write capture /dev/full: No space left on device"]
    assert not os.path.exists(px)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signals_reach_the_engine(sockdir, procs, sig) -> None:
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "proxy.log"
    viewer = start(["vuinspect", "proxy", "--listen", px, "--connect", be, "--no-tui"], log)
    procs.append(viewer)
    wait_line(log, "listening on", viewer)
    engine = _engine_of(viewer.pid)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    assert stop(viewer, sig) == 0  # with a connection still open
    assert _gone(engine)
    assert not os.path.exists(px)
    assert wire.recv_msg(fe.sock) is None
    fe.close()
    assert log.read_text().splitlines()[-1].startswith("vuinspect proxy: 1 connection(s), ")


def test_orphan_exits_once_idle_and_unreachable(sockdir, procs) -> None:
    """A killed viewer's engine forwards on; it only exits once no connection is left and no
    listen path leads to it any more (a removed temporary directory): nothing can need it."""
    from vuinspect.capture import read_frames

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    log = Path(sockdir) / "proxy.log"
    viewer = start(["vuinspect", "proxy", "--listen", px, "--connect", be, "--no-tui", "-w", cap], log)
    procs.append(viewer)
    wait_line(log, "listening on", viewer)
    engine = _engine_of(viewer.pid)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    viewer.kill()
    viewer.wait()
    os.unlink(px)  # unreachable now, but a connection is still open: keep forwarding it
    time.sleep(1.5)
    fe.round_trips(10)
    assert not _gone(engine, 0.1)
    fe.close()
    assert _gone(engine, 10)
    frames = list(read_frames(cap))
    assert frames[-1].kind == "close"
    assert len([f for f in frames if f.kind == "data"]) == len(fe.sent) + len(fe.received)
