"""The three real runs (blk, fs, net), with or without the proxy in the middle.

``vuinspect demo`` and tests/realworld share these, so what the demo shows is
what the tests check.  Each run lives in a work directory (sockets, disk image,
share, one log per program) and returns an :class:`Outcome`; a run ``via``
the proxy also leaves the capture it was given.  The blk run is also a context
(:func:`blk_running`) for tests that act on its peers while the guest works.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runners
from .guest import VERDICT, Guest, cmdline, pattern

Show = Callable[[str], None]
#: Serve ``listen`` -> ``connect`` in the caller's own process instead of the proxy CLI.
Serve = Callable[[Path, Path], contextlib.AbstractContextManager[Any]]
TESTPMD_MESSAGE = re.compile(r"read message (VHOST_USER_\w+)")
TESTPMD_DRIVER_OK = re.compile(r"-DRIVER_OK: 1")


@dataclass
class Outcome:
    """What a run ended with: a verdict for people and facts for tests."""

    backend: str
    ok: bool
    verdict: str
    workdir: Path
    messages: list[str] = field(default_factory=list)  # back-end's own log of requests (net)
    proxy_pid: int | None = None


@dataclass
class ProxySpec:
    """Put the proxy in the middle: capture to ``capture``, extra CLI arguments."""

    capture: Path
    extra: Sequence[str] = ()
    show: Show | None = None


def _noshow(_line: str) -> None:
    pass


def _proxied(
    stack: contextlib.ExitStack,
    via: ProxySpec | None,
    backend_sock: Path,
    workdir: Path,
    device: str,
) -> tuple[Path, runners.Proc | None]:
    """Start the proxy if asked; return the path the other peer should use."""
    if via is None:
        return backend_sock, None
    front = workdir / "vu.sock"
    extra = ["--device", device, *via.extra]  # names the device's feature bits from the start
    proc = stack.enter_context(
        runners.proxy(front, backend_sock, via.capture, workdir, extra=extra, on_line=via.show)
    )
    return front, proc


def guest_run(
    device_args: list[str],
    workdir: Path,
    guest: Guest,
    test: str,
    *,
    seed: str = "vuinspect",
    size_kib: int = 1024,
    timeout: float = 120,
    name: str = "qemu",
) -> tuple[bool, str]:
    """Boot the guest with ``device_args`` for ``test``; (verdict is OK, verdict line)."""
    append = cmdline(test, seed, size_kib)
    with runners.qemu(
        device_args, workdir, kernel=guest.kernel, initrd=guest.initrd, append=append, name=name
    ) as qemu:
        return _verdict(qemu, timeout)


def _verdict(qemu: runners.Proc, timeout: float) -> tuple[bool, str]:
    """The guest's verdict line (is it OK, the line); it powers off right after."""
    match = qemu.wait_for(VERDICT, timeout)
    qemu.wait_exit(30)
    return match["status"] == "OK", match.group(0).strip()


def run_blk(
    workdir: Path,
    guest: Guest,
    *,
    via: ProxySpec | None = None,
    show: Show = _noshow,
    seed: str = "vuinspect",
    size_kib: int = 1024,
    timeout: float = 120,
) -> Outcome:
    """qemu-storage-daemon + QEMU: the guest writes a pattern to the disk and reads it back."""
    with blk_running(workdir, guest, via=via, show=show, seed=seed, size_kib=size_kib) as run:
        ok, verdict = run.verdict(timeout)
        proxy_pid = run.proxy.pid if run.proxy else None
    if ok and not run.disk_holds_pattern():
        ok, verdict = False, f"{verdict}; but the disk image does not hold the pattern"
    elif ok:
        verdict += f"; disk image checked on the host ({len(pattern(seed, size_kib))} bytes)"
    return Outcome("blk", ok, verdict, workdir, proxy_pid=proxy_pid)


def run_fs(
    workdir: Path,
    guest: Guest,
    *,
    via: ProxySpec | None = None,
    show: Show = _noshow,
    seed: str = "vuinspect",
    size_kib: int = 64,
    timeout: float = 120,
) -> Outcome:
    """virtiofsd + QEMU: the guest mounts the share and writes a file the host then checks."""
    share = workdir / "share"
    share.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        show(f"starting virtiofsd sharing {share}")
        stack.enter_context(runners.virtiofsd(workdir / "fs.sock", share, workdir))
        target, proxy = _proxied(stack, via, workdir / "fs.sock", workdir, "fs")
        show(f"starting QEMU (TCG) on {target}; the guest mounts the share and writes vutest.txt")
        ok, verdict = guest_run(
            runners.fs_device(target),
            workdir,
            guest,
            "fs",
            seed=seed,
            size_kib=size_kib,
            timeout=timeout,
        )
        proxy_pid = proxy.pid if proxy else None
    written = share / "vutest.txt"
    if ok and (not written.is_file() or written.read_bytes() != pattern(seed, size_kib)):
        ok, verdict = False, f"{verdict}; but {written} does not hold what the guest wrote"
    elif ok:
        verdict += f"; {written.name} checked on the host ({written.stat().st_size} bytes)"
    return Outcome("fs", ok, verdict, workdir, proxy_pid=proxy_pid)


def run_net(
    workdir: Path,
    *,
    via: ProxySpec | None = None,
    show: Show = _noshow,
    timeout: float = 90,
) -> Outcome:
    """QEMU as server + dpdk-testpmd as client, until the device is up (DRIVER_OK).

    No kernel: the NIC's iPXE ROM drives the device.  The run stops once
    testpmd has seen DRIVER_OK, so its request log up to there is the part of
    the handshake that does not depend on timing.
    """
    qemu_sock = workdir / "qemu.sock"
    with contextlib.ExitStack() as stack:
        show("starting QEMU (TCG) as vhost-user server for a virtio-net device")
        qemu = stack.enter_context(runners.qemu(runners.net_server_device(qemu_sock), workdir))
        runners.wait_for_socket(qemu_sock, 15, qemu)
        target, proxy = _proxied(stack, via, qemu_sock, workdir, "net")
        show(f"starting dpdk-testpmd (net_vhost, client=1) on {target}")
        pmd = stack.enter_context(runners.testpmd(target, workdir, client=True))
        try:
            pmd.wait_for(TESTPMD_DRIVER_OK, timeout)
            ok, verdict = True, "testpmd saw DRIVER_OK: handshake and rings set up"
        except runners.RunError as exc:
            ok, verdict = False, str(exc).splitlines()[0]
        proxy_pid = proxy.pid if proxy else None
    names = []
    for line in pmd.lines:
        m = TESTPMD_MESSAGE.search(line)
        if m:
            names.append(m[1])
        if TESTPMD_DRIVER_OK.search(line):
            break
    if ok:
        verdict += f" ({len(names)} requests)"
    return Outcome("net", ok, verdict, workdir, messages=names, proxy_pid=proxy_pid)


@dataclass
class BlkRun:
    """A blk run under way (:func:`blk_running`): its peers and the checks of its end."""

    work: Path
    image: Path
    capture: Path | None  # what the proxy writes (``via``), None otherwise
    qsd: runners.Proc
    proxy: runners.Proc | None  # None without the proxy CLI in the middle
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
        return _verdict(self.qemu, timeout)

    def disk_holds_pattern(self) -> bool:
        """Does the disk image hold what the guest wrote (checked on the host)?"""
        want = pattern(self.seed, self.size_kib)
        with open(self.image, "rb") as f:
            return f.read(len(want)) == want


@contextlib.contextmanager
def blk_running(
    workdir: Path,
    guest: Guest,
    *,
    via: ProxySpec | None = None,
    serve: Serve | None = None,
    show: Show = _noshow,
    seed: str = "vuinspect",
    size_kib: int = 1024,
    disk: int | None = None,
    quiet: bool = True,
    stop_qemu: int = signal.SIGTERM,
) -> Iterator[BlkRun]:
    """qemu-storage-daemon, the proxy (``via``; or ``serve``, the caller's own) and QEMU
    booting the guest's blk test (write ``size_kib`` and read it back; ``quiet`` False:
    the kernel's own lines too).  At the end a stopped back-end is continued first (so
    its SIGTERM is not left pending), QEMU is stopped with ``stop_qemu``, then the rest."""
    image = workdir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(disk or max(8 << 20, size_kib * 2048))
    append = cmdline("blk", seed, size_kib)
    if not quiet:
        append = append.replace(" quiet", "")
    with contextlib.ExitStack() as stack:
        show("starting qemu-storage-daemon (vhost-user-blk export)")
        qsd = stack.enter_context(runners.storage_daemon(image, workdir / "qsd.sock", workdir))
        if serve is not None:
            target, proxy = workdir / "vu.sock", None
            stack.enter_context(serve(target, workdir / "qsd.sock"))
        else:
            target, proxy = _proxied(stack, via, workdir / "qsd.sock", workdir, "blk")
        show(f"starting QEMU (TCG) on {target}; the guest writes {size_kib} KiB and reads it back")
        qemu = stack.enter_context(
            runners.qemu(
                runners.blk_device(target),
                workdir,
                kernel=guest.kernel,
                initrd=guest.initrd,
                append=append,
            )
        )
        capture = via.capture if via is not None else None
        run = BlkRun(workdir, image, capture, qsd, proxy, qemu, seed, size_kib)
        try:
            yield run
        finally:
            if run.backend_stopped:
                run.continue_backend()
            qemu.stop(stop_qemu, 5)


# --- watching a blk run's capture while the proxy writes it ---------------------------------


def ring_samples(path: Path) -> list[dict[str, Any]]:
    """The ring frames of a capture that may still be written (whole frames only: a
    block cut short, or no file yet, ends the list; anything else is a failure)."""
    from vuinspect.capture import CaptureError, CaptureReader

    out = []
    with contextlib.suppress(CaptureError, OSError):
        reader = CaptureReader(str(path))
        try:
            for f in reader:
                if f.kind == "ring":
                    out.append(json.loads(f.data))
        finally:
            reader.close()
    return out


def io_under_way(path: Path, min_used: int = 12) -> bool:
    """The kernel's start of vring 0 (SeaBIOS started and stopped it before) has used
    ``min_used`` requests: 12, the guest's I/O (partition scan or its write) is under way;
    1, the kernel's probe of the disk is done (the guest's own I/O comes later)."""
    s = ring_samples(path)
    starts = [i for i, x in enumerate(s) if x.get("event") == "start"]
    return len(starts) >= 2 and any(x["used_idx"] >= min_used for x in s[starts[-1] :])
