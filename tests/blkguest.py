"""A live blk run for tests: qemu-storage-daemon, the proxy (CLI writing a capture, or one
the test serves in-process), QEMU (TCG) booting the guest's blk test.

Every test that watches a real guest through the proxy while it acts on its peers
(SIGSTOP the back-end, a proxy rule that holds or drops a message, the live app)
uses this one set-up: every program is a :class:`vuinspect.demo.runners.Proc` in
its own process group, stopped by pid when the block ends (a stopped back-end is
continued first so its SIGTERM is not left pending); sockets, logs and the capture
live in ``work``.  The readers below look at the capture the proxy is writing.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vuinspect.capture import CaptureReader
from vuinspect.demo import runners
from vuinspect.demo.guest import VERDICT, Guest, build_guest, cmdline, pattern

#: Serve ``listen`` -> ``connect`` in the test's own process instead of the proxy CLI.
Serve = Callable[[Path, Path], contextlib.AbstractContextManager[Any]]


def require_guest() -> Guest:
    """The guest kernel and initrd, or a skip when QEMU or qemu-storage-daemon is missing."""
    try:
        for program in ("qemu-system-x86_64", "qemu-storage-daemon"):
            runners.require(program)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    return build_guest()


@dataclass
class BlkRun:
    """The running peers of one :func:`blk_run` and where its capture is written."""

    work: Path
    image: Path
    capture: Path
    qsd: runners.Proc
    proxy: runners.Proc | None  # None when the test serves the proxy itself
    qemu: runners.Proc
    seed: str
    size_kib: int
    backend_stopped: bool = False

    def stop_backend(self) -> None:
        """SIGSTOP qemu-storage-daemon: it holds the requests in flight, answers nothing."""
        self.qsd.send_signal(signal.SIGSTOP)
        self.backend_stopped = True

    def continue_backend(self) -> None:
        self.qsd.send_signal(signal.SIGCONT)
        self.backend_stopped = False

    def verdict(self, timeout: float) -> tuple[bool, str]:
        """The guest's verdict line (is it OK, the line); it powers off right after."""
        match = self.qemu.wait_for(VERDICT, timeout)
        self.qemu.wait_exit(30)
        return match["status"] == "OK", match.group(0).strip()

    def disk_holds_pattern(self) -> bool:
        """Does the disk image hold what the guest wrote (checked on the host)?"""
        want = pattern(self.seed, self.size_kib)
        with open(self.image, "rb") as f:
            return f.read(len(want)) == want


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
    """qsd <- ``vuinspect proxy --device blk -w work/blk.pcapng EXTRA`` (or ``serve``) <-
    QEMU booting the guest's blk test (write ``size_kib`` and read it back; ``quiet``
    False: the kernel's own lines too); all stopped at the end, QEMU with ``stop_qemu``
    (SIGTERM: it stops its vrings first, as a person's Ctrl-C would)."""
    image = work / "disk.img"
    with open(image, "wb") as f:
        f.truncate(disk)
    cap = work / "blk.pcapng"
    front, back = work / "vu.sock", work / "qsd.sock"
    append = cmdline("blk", seed, size_kib)
    if not quiet:
        append = append.replace(" quiet", "")
    with contextlib.ExitStack() as stack:
        qsd = stack.enter_context(runners.storage_daemon(image, back, work))
        px = None
        if serve is not None:
            stack.enter_context(serve(front, back))
        else:
            px = stack.enter_context(
                runners.proxy(front, back, cap, work, extra=["--device", "blk", "-q", *extra])
            )
        qemu = stack.enter_context(
            runners.qemu(
                runners.blk_device(front),
                work,
                kernel=guest.kernel,
                initrd=guest.initrd,
                append=append,
            )
        )
        run = BlkRun(work, image, cap, qsd, px, qemu, seed, size_kib)
        try:
            yield run
        finally:
            if run.backend_stopped:
                run.continue_backend()
            qemu.stop(stop_qemu, 5)  # (SIGKILL: the guest's own end is not what is checked)


# --- reading the capture the proxy writes --------------------------------------------------


def ring_samples(path: Path) -> list[dict]:
    """The ring frames of a capture that may still be written (whole frames only)."""
    out = []
    with contextlib.suppress(Exception):
        reader = CaptureReader(str(path))
        try:
            for f in reader:
                if f.kind == "ring":
                    out.append(json.loads(f.data))
        finally:
            reader.close()
    return out


def io_under_way(path: Path) -> bool:
    """The kernel's start of vring 0 (SeaBIOS started and stopped it before) has moved:
    the guest's I/O (partition scan or its write) is under way."""
    s = ring_samples(path)
    starts = [i for i, x in enumerate(s) if x.get("event") == "start"]
    return len(starts) >= 2 and any(x["used_idx"] >= 12 for x in s[starts[-1] :])


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
