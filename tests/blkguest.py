"""A live blk run for tests: qemu-storage-daemon, the proxy CLI writing a capture, QEMU (TCG).

The tests that watch a real guest through the proxy while they act on its peers
(SIGSTOP the back-end, a proxy rule that holds a message) share this set-up:
every program is a :class:`vuinspect.demo.runners.Proc` in its own process group,
stopped by pid when the block ends (a stopped back-end is continued first so its
SIGTERM is not left pending); sockets and the capture live in ``work``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from vuinspect.demo import runners
from vuinspect.demo.guest import Guest, build_guest, cmdline


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
    proxy: runners.Proc
    qemu: runners.Proc
    backend_stopped: bool = False

    def stop_backend(self) -> None:
        """SIGSTOP qemu-storage-daemon: it holds the requests in flight, answers nothing."""
        self.qsd.send_signal(signal.SIGSTOP)
        self.backend_stopped = True

    def continue_backend(self) -> None:
        self.qsd.send_signal(signal.SIGCONT)
        self.backend_stopped = False


@contextlib.contextmanager
def blk_run(
    work: Path,
    guest: Guest,
    *,
    extra: Sequence[str] = (),
    seed: str = "live",
    size_kib: int = 1024,
    disk: int = 16 << 20,
) -> Iterator[BlkRun]:
    """qsd <- ``vuinspect proxy --device blk -w work/blk.pcapng EXTRA`` <- QEMU booting the
    guest's blk test (write ``size_kib`` and read it back); all stopped at the end."""
    image = work / "disk.img"
    with open(image, "wb") as f:
        f.truncate(disk)
    cap = work / "blk.pcapng"
    with contextlib.ExitStack() as stack:
        qsd = stack.enter_context(runners.storage_daemon(image, work / "qsd.sock", work))
        px = stack.enter_context(
            runners.proxy(
                work / "vu.sock",
                work / "qsd.sock",
                cap,
                work,
                extra=["--device", "blk", "-q", *extra],
            )
        )
        qemu = stack.enter_context(
            runners.qemu(
                runners.blk_device(work / "vu.sock"),
                work,
                kernel=guest.kernel,
                initrd=guest.initrd,
                append=cmdline("blk", seed, size_kib),
            )
        )
        run = BlkRun(work, image, cap, qsd, px, qemu)
        try:
            yield run
        finally:
            if run.backend_stopped:
                run.continue_backend()
            qemu.stop(signal.SIGKILL, 5)  # the guest's own end is not what these tests check
