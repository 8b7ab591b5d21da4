"""The ``vuinspect proxy`` process forwards; summary lines and the TUI come from a viewer child.

A viewer that dies must leave the forwarding (and the capture) untouched; a
forwarding process that dies must not leave its viewer behind; signals to the
proxy's pid stop both, with every line printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import proxy_options, run_proxy

from .conftest import children
from .test_command import run_backend, session, start_cli_proxy, start_proxy, stop, wait_line

pytestmark = pytest.mark.timeout(60)


def _viewer_of(pid: int) -> int:
    """The pid of the viewer child of proxy ``pid``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in children(pid):
            if b"--view-fd" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return child
        time.sleep(0.05)
    raise AssertionError(f"no viewer child under {pid}")


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

    be, px, cap, log, out, proxy = start_cli_proxy(sockdir, procs)
    viewer = _viewer_of(proxy.pid)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    fe.close()
    deadline = time.monotonic() + 5
    while "SET_MEM_TABLE" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "SET_MEM_TABLE" in out.read_text()  # the viewer decoded the engine's stream
    os.kill(viewer, signal.SIGKILL)
    wait_line(log, "the display ended unexpectedly", proxy)
    # The VM must not notice: the proxy still forwards, and still captures.
    session(px, 20)
    assert stop(proxy) == 0
    assert not os.path.exists(px)
    frames = list(read_frames(cap))
    assert len([f for f in frames if f.kind == "open"]) == 2
    assert frames[-1].kind == "close"
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("show", ["--no-tui", "--tui-headless"])
def test_proxy_killed_its_viewer_goes_too(sockdir, procs, show) -> None:
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "proxy.log"
    proxy = start_proxy(procs, px, be, log, show, no_tui=False, stdin=subprocess.DEVNULL)
    viewer = _viewer_of(proxy.pid)
    proxy.kill()
    proxy.wait()
    assert _gone(viewer), "the viewer outlived the forwarding process"


def test_capture_target_refused_one_error_line(sockdir) -> None:
    px = os.path.join(sockdir, "px.sock")
    res = run_proxy(
        *proxy_options(px, os.path.join(sockdir, "be.sock"), "-w", "/dev/full", quiet=False)
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "vuinspect proxy: cannot write capture /dev/full: No space left on device"
    ]
    assert not os.path.exists(px)


@pytest.mark.parametrize("group", [False, True], ids=["pid", "group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signals_end_both_with_every_line_printed(sockdir, procs, sig, group) -> None:
    """To the proxy's pid, or to its whole process group (a terminal, a service manager)."""
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "proxy.log"
    out = Path(sockdir) / "proxy.out"
    stdout = open(out, "wb")  # noqa: SIM115
    proxy = start_proxy(procs, px, be, log, stdout=stdout, start_new_session=True)
    viewer = _viewer_of(proxy.pid)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    fe.round_trips(200)
    if group and sig != signal.SIGHUP:  # (SIGHUP to the group: the terminal is gone, no lines)
        os.killpg(proxy.pid, sig)
        assert proxy.wait(15) == 0
    else:
        assert stop(proxy, sig) == 0  # with a connection still open
    assert _gone(viewer)
    assert not os.path.exists(px)
    assert wire.recv_msg(fe.sock) is None
    fe.close()
    lines = out.read_text().splitlines()
    assert len([ln for ln in lines if "OPEN" not in ln and "CLOSE" not in ln]) >= len(
        fe.sent
    ) + len(fe.received)  # (a reply and its request may share a line)
    assert "CLOSE" in lines[-1] or "close" in lines[-1].lower()
    assert log.read_text().splitlines()[-1].startswith("vuinspect proxy: 1 connection(s), ")
