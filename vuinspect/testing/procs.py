"""The proxy and the test peers as processes: one command line, one wait, one stop.

Tests, benchmarks and the latency tool run ``vuinspect proxy`` between the
in-repo peers; building its command line, waiting for it to listen and
stopping it by pid live here once, so an option of the command changes in one
place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def proxy_options(
    listen: str, connect: str, *extra: str, quiet: bool = True, no_tui: bool = True
) -> list[str]:
    """``--listen L --connect C [--no-tui] [-q] EXTRA``: the options after ``vuinspect proxy``.
    Without ``quiet`` the proxy is a viewer printing summary lines."""
    return [
        "--listen",
        listen,
        "--connect",
        connect,
        *(["--no-tui"] if no_tui else []),
        *(["-q"] if quiet else []),
        *extra,
    ]


def proxy_args(
    listen: str, connect: str, *extra: str, quiet: bool = True, no_tui: bool = True
) -> list[str]:
    """``vuinspect proxy`` with :func:`proxy_options`: the words after ``python -m``."""
    return [
        "vuinspect",
        "proxy",
        *proxy_options(listen, connect, *extra, quiet=quiet, no_tui=no_tui),
    ]


def proxy_command(
    listen: str, connect: str, *extra: str, quiet: bool = True, no_tui: bool = True
) -> list[str]:
    """:func:`proxy_args` run by this interpreter (``sys.executable -m vuinspect proxy ...``)."""
    return [sys.executable, "-m", *proxy_args(listen, connect, *extra, quiet=quiet, no_tui=no_tui)]


def run_proxy(*args: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``vuinspect proxy ARGS`` that is to end by itself (a refusal, ``--help``); its
    output as text.  ``kw`` to :func:`subprocess.run`."""
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def backend_args(listen: str, *extra: str) -> list[str]:
    """The in-repo test back-end serving every connection at ``listen`` (after ``python -m``)."""
    return ["vuinspect.testing.backend", "--listen", listen, *extra]


def busy_frontend_args(connect: str) -> list[str]:
    """The in-repo front-end in an endless loop of round trips with an fd each and a back-end
    channel: traffic through ``connect`` until it is killed (after ``python -m``)."""
    return [
        "vuinspect.testing.frontend",
        "--connect",
        connect,
        "--rounds",
        "100000000",
        "--warmup",
        "0",
        "--fds",
        "--backend-channel",
    ]


def wait_until(
    pred: Callable[[], bool],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.01,
) -> None:
    """Poll ``pred`` until it holds; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_path(path: str, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Wait for ``path`` (the socket ``proc`` listens on); fail at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            said = proc.stderr.read() if proc.stderr else ""  # a pipe: it has ended
            raise AssertionError(f"{path} did not appear: exit {proc.returncode} {said!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def wait_text(
    log: str | Path,
    text: str,
    proc: subprocess.Popen[Any],
    timeout: float = 20.0,
    count: int = 1,
) -> None:
    """Wait until ``text`` stands ``count`` times in the log file ``proc`` writes its stderr to
    (``listening on PATH`` is the proxy's and the peers' readiness line)."""
    log = Path(log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count(text) >= count:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    seen = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(f"{text!r} not seen (x{count}); log:\n{seen[-3000:]}")


def stop(
    proc: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout: float = 20.0,
    *,
    check: bool = True,
) -> int:
    """Send ``sig`` (if it still runs) and return its exit status.  One still running after
    ``timeout`` s is killed; with ``check`` that is an error (TimeoutExpired)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        if check:
            raise
        return proc.returncode


def timed_stop(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> tuple[int, float]:
    """Send ``sig`` and return (exit status, seconds it took to end); one still running after
    ``timeout`` s is killed and that is an AssertionError (the proxy must stop quickly)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the process did not stop within {timeout:g} s") from None
    return rc, time.monotonic() - t0
