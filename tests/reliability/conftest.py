"""Shared fixtures: budgets, short socket dirs, started processes, /proc readings, reports.

Budgets: every count a test uses goes through :func:`scaled`, so CI runs the
short version and ``VUINSPECT_RELIABILITY=full`` (or ``VUINSPECT_FUZZ_SCALE=N``)
the long one documented in docs/reliability.md.  Tests call :func:`report`
with the numbers they saw; with ``VUINSPECT_RELIABILITY_REPORT=FILE`` they are
appended there as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vuinspect.testing.procs import backend_args, proxy_args, wait_text
from vuinspect.testing.procs import stop as stop  # re-exported: the tests' one stop
from vuinspect.testing.procs import wait_until as wait_until

FULL = os.environ.get("VUINSPECT_RELIABILITY") == "full"


def scaled(ci: int, full: int) -> int:
    """The count for this run: ``ci`` by default, ``full`` for the long run."""
    scale = os.environ.get("VUINSPECT_FUZZ_SCALE")
    if scale:
        return max(1, int(ci * float(scale)))
    return full if FULL else ci


def report(test: str, **numbers: object) -> None:
    """Record what a test measured (printed with -s, and appended to the report file)."""
    line = json.dumps({"test": test, **numbers}, sort_keys=True)
    print(line)
    path = os.environ.get("VUINSPECT_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@pytest.fixture
def fuzz_count():
    """Scale a CI input count for the long run (x100 under VUINSPECT_RELIABILITY=full)."""

    def count(n: int) -> int:
        return scaled(n, n * 100)

    return count


# -- sockets and processes ------------------------------------------------------------
@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory for sockets (AF_UNIX paths must stay under 108 bytes)."""
    d = tempfile.mkdtemp(dir="/tmp", prefix="vur-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Procs:
    """Processes a test started: killed by pid (and waited for) at the end."""

    def __init__(self, logdir: str) -> None:
        self.logdir = Path(logdir)
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], name: str, **kw: object) -> subprocess.Popen:
        log = self.logdir / f"{name}.log"
        out = kw.pop("stdout", subprocess.DEVNULL)
        extra = kw.pop("preexec_fn", None)

        def pre() -> None:
            # A test run started in the background (nohup, `&` in a script) ignores SIGINT and
            # children inherit that; Python then keeps it ignored, so SIGINT tests could not work.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if extra is not None:
                extra()

        with open(log, "ab") as err:
            p = subprocess.Popen(
                [sys.executable, "-m", *argv], stdout=out, stderr=err, preexec_fn=pre, **kw
            )  # type: ignore[call-overload]
        p.log = log  # type: ignore[attr-defined]
        self.started.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.started:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


@pytest.fixture
def procs(sockdir: str) -> Iterator[Procs]:
    p = Procs(sockdir)
    yield p
    p.kill_all()


def log_text(proc: subprocess.Popen) -> str:
    return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]


def wait_line(proc: subprocess.Popen, text: str, timeout: float = 20.0, count: int = 1) -> None:
    """Wait until ``text`` appears ``count`` times in the process's stderr log."""
    wait_text(proc.log, text, proc, timeout, count)  # type: ignore[attr-defined]


def _started(
    procs: Procs, argv: list[str], name: str, ready: str, **kw: object
) -> subprocess.Popen:
    """Start ``argv`` and return it once its log holds one more ``ready`` line than before (a
    name started again appends to the same log)."""
    log = procs.logdir / f"{name}.log"
    before = log.read_text(errors="replace").count(ready) if log.exists() else 0
    p = procs.start(argv, name, **kw)
    wait_line(p, ready, count=before + 1)
    return p


def start_proxy(
    procs: Procs,
    listen: str,
    connect: str,
    *extra: str,
    name: str = "proxy",
    quiet: bool = True,
    **kw: object,
) -> subprocess.Popen:
    """``vuinspect proxy`` as a subprocess, returned once it listens (``kw`` to Popen).

    ``quiet`` (-q): forwarding and capture run in this one process.  Without
    it the process is a viewer printing summary lines (to /dev/null here) and
    forwarding runs in its child, the engine (see :func:`forwarding_pid`).
    """
    argv = proxy_args(listen, connect, *extra, quiet=quiet)
    return _started(procs, argv, name, f"listening on {listen}", **kw)


def forwarding_pid(pid: int, listen: str) -> int:
    """The process that forwards (holds the listening socket at ``listen``): ``pid`` or a child.

    Without -q, ``vuinspect proxy`` is two processes, one forwarding and one decoding for
    display; which one is the parent is the proxy's business, so look it up.
    """
    inodes = set()
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == listen:
                inodes.add(f"socket:[{parts[6]}]")
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    for candidate in (pid, *kids):
        with contextlib.suppress(OSError):
            fds = os.listdir(f"/proc/{candidate}/fd")
            if any(os.readlink(f"/proc/{candidate}/fd/{fd}") in inodes for fd in fds):
                return candidate
    raise AssertionError(f"no process of {pid} holds the listening socket {listen}")


def start_backend(procs: Procs, path: str, *extra: str, name: str = "backend") -> subprocess.Popen:
    """The in-repo test back-end as a subprocess, returned once it listens."""
    return _started(procs, backend_args(path, *extra), name, f"listening on {path}")


def linked_file(
    sockdir: str, name: str, text: str, link: Callable[[str, str], None] = os.symlink
) -> tuple[str, str]:
    """A file ``precious`` holding ``text`` and ``name``, a link to it (``os.symlink`` or
    ``os.link``), for tests that the proxy never writes through one: (target, link)."""
    target = os.path.join(sockdir, "precious")
    with open(target, "w") as f:
        f.write(text)
    path = os.path.join(sockdir, name)
    link(target, path)
    return target, path


# -- /proc ------------------------------------------------------------------------------
def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settle_fds(pid: int, baseline: int, timeout: float = 10.0) -> int:
    """Wait for the fd count of ``pid`` to come back to ``baseline``; return the last count."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        n = fd_count(pid)
    return n
