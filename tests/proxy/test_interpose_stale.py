"""``--interpose`` on a stale socket (its back-end died or is restarting) says so, then works."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.testing.procs import backend_args, stop, wait_text

pytestmark = pytest.mark.timeout(60)
NOTE = "nothing listens on {} (is the back-end running?): interposing anyway"


def _start(argv: list[str], log: Path, procs) -> subprocess.Popen:
    with open(log, "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.DEVNULL, stderr=err)
    procs.append(p)
    return p


def _interpose(path: str, log: Path, procs) -> subprocess.Popen:
    p = _start(["vuinspect", "proxy", "--interpose", path, "--no-tui", "-q"], log, procs)
    wait_text(log, "listening on", p)
    return p


def test_interposing_a_stale_socket_says_nothing_listens(sockdir, procs) -> None:
    stale = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)
    dead.close()  # the file stays, nobody listens: what a killed back-end leaves
    ino = os.stat(stale).st_ino
    log = Path(sockdir) / "proxy.log"
    p = _interpose(stale, log, procs)
    lines = log.read_text().splitlines()
    said = [n for n, line in enumerate(lines) if NOTE.format(stale) in line]
    assert len(said) == 1, lines  # once, before the readiness line
    assert said[0] < next(n for n, line in enumerate(lines) if "listening on" in line)
    assert stop(p, signal.SIGTERM) == 0
    assert os.stat(stale).st_ino == ino  # put back as it was
    assert not os.path.exists(stale + ".vuinspect-orig")


def test_interposing_a_live_backend_says_nothing_more(sockdir, procs) -> None:
    be = os.path.join(sockdir, "be.sock")
    be_log = Path(sockdir) / "be.log"
    wait_text(be_log, "listening on", _start(backend_args(be), be_log, procs))
    log = Path(sockdir) / "proxy.log"
    p = _interpose(be, log, procs)
    assert stop(p, signal.SIGTERM) == 0
    assert "nothing listens" not in log.read_text()


def test_the_stale_check_never_connects_to_the_backend(sockdir, procs) -> None:
    """Bound under another spelling (a relative path: /proc/net/unix lists it so), the
    back-end is not asked by a connection: virtiofsd serves one and then exits."""
    import contextlib

    with contextlib.chdir(sockdir):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("rel.sock")
    listener.listen(4)
    listener.setblocking(False)
    try:
        log = Path(sockdir) / "proxy.log"
        p = _interpose(os.path.join(sockdir, "rel.sock"), log, procs)
        assert stop(p, signal.SIGTERM) == 0
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected to it
    finally:
        listener.close()
