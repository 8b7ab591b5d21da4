"""A live blk run for tests: qemu-storage-daemon, the proxy (CLI writing a capture, or one
the test serves in-process), QEMU (TCG) booting the guest's blk test.

Every test that watches a real guest through the proxy while it acts on its peers
(SIGSTOP the back-end, a proxy rule that holds or drops a message, the live app)
uses this one set-up, the demo's own blk run (:func:`vuinspect.demo.scenarios.blk_running`:
every program a :class:`vuinspect.demo.runners.Proc` in its own process group, stopped
by pid when the block ends); sockets, logs and the capture live in ``work``.  The
readers below look at the capture the proxy is writing.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vuinspect.demo import runners
from vuinspect.demo.guest import Guest, build_guest
from vuinspect.demo.scenarios import (
    BlkRun,
    ProxySpec,
    Serve,
    blk_running,
    io_under_way,
    ring_samples,
)

__all__ = [
    "BlkRun",
    "Serve",
    "blk_run",
    "io_under_way",
    "read_json",
    "read_stats",
    "require_guest",
    "ring_samples",
]


def require_guest() -> Guest:
    """The guest kernel and initrd, or a skip when QEMU or qemu-storage-daemon is missing."""
    try:
        for program in ("qemu-system-x86_64", "qemu-storage-daemon"):
            runners.require(program)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    return build_guest()


@contextlib.contextmanager
def blk_run(
    work: Path,
    guest: Guest,
    *,
    extra: Sequence[str] = (),
    seed: str = "live",
    size_kib: int = 1024,
    disk: int = 16 << 20,
    quiet: bool = True,
    serve: Serve | None = None,
    stop_qemu: int = signal.SIGKILL,
) -> Iterator[BlkRun]:
    """qsd <- ``vuinspect proxy --device blk -q -w work/blk.pcapng EXTRA`` (or ``serve``) <-
    QEMU booting the guest's blk test; QEMU stopped with ``stop_qemu`` (SIGKILL: the
    guest's own end is not what is checked; SIGTERM: it stops its vrings first, as a
    person's Ctrl-C would).  ``run.capture`` is work/blk.pcapng either way."""
    capture = work / "blk.pcapng"
    via = None if serve is not None else ProxySpec(capture, extra=["-q", *extra])
    options = dict(seed=seed, size_kib=size_kib, disk=disk, quiet=quiet, stop_qemu=stop_qemu)
    with blk_running(work, guest, via=via, serve=serve, **options) as run:
        run.capture = capture
        yield run


# --- reading the capture the proxy writes --------------------------------------------------


def _read(path: Path, args: Sequence[str], live: bool) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode in ((0, 2) if live else (0,)), r.stderr  # 2: ends inside a block
    return r.stdout


def read_json(path: Path, *args: str, live: bool = False) -> list[dict]:
    """``vuinspect read --json ARGS path`` as rows (``live``: the file is still written)."""
    return [json.loads(line) for line in _read(path, ["--json", *args], live).splitlines()]


def read_stats(path: Path) -> dict:
    """``vuinspect read --stats --json`` of a finished capture."""
    return json.loads(_read(path, ["--stats", "--json"], False))
