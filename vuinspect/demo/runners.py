"""Start and stop the real programs of a demo or test run, and always clean up.

Every program runs in its own process group (so a stop reaches whatever it
forked), its output is read by a thread into a log file and an in-memory list
that waits can scan, and every wait is bounded.  The context managers stop
their program on any exit, exceptions and Ctrl-C included: a failed test must
not leave a QEMU or a DPDK behind.  Every program is also listed in
:data:`STARTED`, so a signal can stop them all from another thread, and gets
SIGTERM from the kernel when the thread that started it dies (even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

INSTALL_HINT = "run scripts/install-system-deps.sh"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"

# Guest RAM must be a shared memfd: the back-end maps it from the fds QEMU passes.
QEMU_BASE = (
    "-accel", "tcg", "-m", "256",
    "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
    "-machine", "q35,memory-backend=mem",
    "-display", "none", "-monitor", "none", "-serial", "stdio",
    "-no-reboot", "-nic", "none",
)  # fmt: skip


PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: no parent-death signal, the stop paths still work
    _LIBC = None


class MissingProgram(RuntimeError):
    """A program the run needs is not installed."""


class RunError(RuntimeError):
    """A program failed to start, died early, or a wait timed out."""


def require(program: str) -> str:
    """Absolute path of ``program``, or MissingProgram with the install hint."""
    path = program if os.path.isabs(program) else shutil.which(program)
    if not path or not os.access(path, os.X_OK):
        raise MissingProgram(f"{program} not found: {INSTALL_HINT}")
    return path


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn: SIGTERM once the starting thread is gone, so a SIGKILLed demo or
    test leaves no back-end or proxy behind (they run in their own sessions: no SIGHUP)."""
    libc = _LIBC
    if libc is None:
        return None

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # it died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Started:
    """The programs this process runs, so a signal handler's thread can stop them all.

    Once :meth:`stop_all` ran, starting another program raises RunError: a run
    that is being stopped must not start its next peer after the sweep.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: list[Proc] = []
        self.stopping = False

    def stop_all(self, timeout: float = 2.5) -> None:
        """SIGTERM every process group at once (newest first), SIGKILL what is left after
        ``timeout``: the proxy gets its moment to finish the capture."""
        with self.lock:
            self.stopping = True
            procs = self.procs[::-1]
        for proc in procs:
            if proc.alive():
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            proc.send_signal(signal.SIGKILL)  # the group: whatever it forked too


#: Every program started through :class:`Proc` in this process.
STARTED = Started()


class Proc:
    """One started program: its Popen, its output lines, and a bounded stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        stdin: int = subprocess.DEVNULL,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._on_line = on_line
        with STARTED.lock:
            if STARTED.stopping:
                raise RunError(f"not starting {name}: stopping")
            self.popen = subprocess.Popen(
                self.argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killpg reaches its children
                preexec_fn=_die_with_parent(os.getpid()),
            )
            STARTED.procs.append(self)
        self.pid = self.popen.pid
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in iter(self.popen.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
                if self._on_line is not None:
                    self._on_line(line)
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 15) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait for an output line matching ``pattern``; RunError on exit or timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = regex.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RunError(
                        f"{self.name}: no {regex.pattern!r} within {timeout:g}s\n{self.tail()}"
                    )
                if not self.alive() and not self._reader.is_alive():
                    raise RunError(
                        f"{self.name} exited ({self.popen.returncode}) before {regex.pattern!r}\n{self.tail()}"
                    )
                self._cond.wait(min(left, 0.2))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RunError(f"{self.name} still running after {timeout:g}s\n{self.tail()}") from None
        self._reader.join(2)
        return rc

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the process group, wait at most ``timeout``, then SIGKILL it."""
        if self.alive():
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.popen.wait(5)
        # Whatever it forked may outlive it: the group gets a SIGKILL either way.
        self.send_signal(signal.SIGKILL)
        self._reader.join(2)
        if self.popen.stdin:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with STARTED.lock, contextlib.suppress(ValueError):
            STARTED.procs.remove(self)
        return self.popen.returncode


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    stdin: int = subprocess.DEVNULL,
    on_line: Callable[[str], None] | None = None,
    stop: Callable[[Proc], object] | None = None,
) -> Iterator[Proc]:
    """Run ``argv`` for the duration of the block; stop it (``stop`` or SIGTERM) after."""
    proc = Proc(name, argv, log_dir / f"{name}.log", stdin=stdin, on_line=on_line)
    try:
        yield proc
    finally:
        if stop is not None and proc.alive():
            with contextlib.suppress(Exception):
                stop(proc)
        proc.stop()


def wait_for_socket(path: Path, timeout: float, *procs: Proc) -> None:
    """Wait until ``path`` is a Unix socket; fail early if one of ``procs`` died.

    Never connects to probe it: virtiofsd serves exactly one connection and
    exits when it closes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return
        for p in procs:
            if not p.alive():
                raise RunError(
                    f"{p.name} exited ({p.popen.returncode}) before creating {path}\n{p.tail()}"
                )
        time.sleep(0.05)
    raise RunError(f"{path} did not appear within {timeout:g}s")


# --- the programs -------------------------------------------------------------------------


@contextlib.contextmanager
def storage_daemon(image: Path, sock: Path, log_dir: Path, name: str = "qsd") -> Iterator[Proc]:
    """qemu-storage-daemon exporting ``image`` as vhost-user-blk on ``sock``."""
    argv = [
        require("qemu-storage-daemon"),
        "--blockdev", f"driver=file,node-name=file,filename={image}",
        "--export", f"type=vhost-user-blk,id=exp,node-name=file,addr.type=unix,addr.path={sock},writable=on",
    ]  # fmt: skip
    with running(name, argv, log_dir) as proc:
        wait_for_socket(sock, 10, proc)
        yield proc


@contextlib.contextmanager
def virtiofsd(sock: Path, source: Path, log_dir: Path) -> Iterator[Proc]:
    """virtiofsd sharing ``source`` on ``sock`` (it serves one connection, then exits)."""
    argv = [
        require(VIRTIOFSD),
        f"--socket-path={sock}",
        "-o",
        f"source={source}",
        "-o",
        "cache=none",
    ]
    with running("virtiofsd", argv, log_dir) as proc:
        wait_for_socket(sock, 10, proc)
        yield proc


def _close_stdin(proc: Proc) -> None:
    """testpmd's non-interactive mode waits for Enter: EOF on stdin ends it cleanly."""
    if proc.popen.stdin:
        proc.popen.stdin.close()
    proc.wait_exit(10)


@contextlib.contextmanager
def testpmd(
    sock: Path,
    log_dir: Path,
    *,
    client: bool = True,
    frontend: int = 0,
    packed: bool = False,
    small: bool = False,
    forward: str = "",
    name: str = "testpmd",
) -> Iterator[Proc]:
    """dpdk-testpmd with a net_vhost port on ``sock`` (``frontend``: a virtio-user
    front-end there instead, one queue of that size, ``packed`` rings), without
    hugepages or PCI.

    ``small``: 256 MiB and 2048 mbufs (starts in 0.5 s instead of 2.6 s); ``forward``:
    that forwarding mode (txonly, rxonly, ...), started at once.  Its runtime
    directory (/var/run/dpdk/<prefix>) gets a unique prefix and is removed afterwards.
    """
    prefix = f"vuinspect{os.getpid()}-{time.monotonic_ns() % 10**9}"
    if frontend:
        vdev = f"net_virtio_user0,path={sock},queues=1,queue_size={frontend}"
        vdev += ",packed_vq=1" if packed else ""
    else:
        vdev = f"net_vhost0,iface={sock},queues=1" + (",client=1" if client else "")
    argv = [
        require("dpdk-testpmd"),
        "--no-huge", "-m", "256" if small else "1024", "--no-pci", f"--file-prefix={prefix}",
        "--log-level=lib.eal:error", "--vdev", vdev, "--", "--nb-cores=1",
    ]  # fmt: skip
    if small:
        argv.append("--total-num-mbufs=2048")
    if forward:
        argv += [f"--forward-mode={forward}", "--auto-start"]
    try:
        with running(name, argv, log_dir, stdin=subprocess.PIPE, stop=_close_stdin) as proc:
            yield proc
    finally:
        for runtime in (
            Path("/var/run/dpdk") / prefix,
            Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / "dpdk" / prefix,
        ):
            shutil.rmtree(runtime, ignore_errors=True)


@contextlib.contextmanager
def qemu(
    device_args: Sequence[str],
    log_dir: Path,
    *,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str = "",
    name: str = "qemu",
    on_line: Callable[[str], None] | None = None,
) -> Iterator[Proc]:
    """qemu-system-x86_64 (TCG, shared memfd RAM) with ``device_args``; serial on its output."""
    argv = [require("qemu-system-x86_64"), *QEMU_BASE]
    if kernel is not None:
        argv += ["-kernel", str(kernel)]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        argv += ["-append", append]
    argv += list(device_args)
    with running(name, argv, log_dir, on_line=on_line) as proc:
        yield proc


def blk_device(sock: Path, *, reconnect: bool = False) -> list[str]:
    """QEMU arguments for a vhost-user-blk disk on ``sock`` (one queue: qsd serves one)."""
    chardev = f"socket,id=blk0,path={sock}" + (",reconnect=1" if reconnect else "")
    return ["-chardev", chardev, "-device", "vhost-user-blk-pci,chardev=blk0,num-queues=1"]


def fs_device(sock: Path, tag: str = "share") -> list[str]:
    """QEMU arguments for a vhost-user-fs (virtiofs) device with mount tag ``tag``."""
    return [
        "-chardev",
        f"socket,id=fs0,path={sock}",
        "-device",
        f"vhost-user-fs-pci,chardev=fs0,tag={tag}",
    ]


def net_server_device(sock: Path) -> list[str]:
    """QEMU arguments for a vhost-user netdev where QEMU listens on ``sock``.

    Without a kernel, the NIC's iPXE option ROM drives the device far enough for
    the whole handshake (memory table, rings, DRIVER_OK).
    """
    return [
        "-chardev", f"socket,id=net0,path={sock},server=on,wait=off",
        "-netdev", "vhost-user,id=n0,chardev=net0",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


@contextlib.contextmanager
def proxy(
    listen: Path | None,
    connect: Path | None,
    capture: Path,
    log_dir: Path,
    *,
    extra: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
    name: str = "proxy",
) -> Iterator[Proc]:
    """``vuinspect proxy --no-tui -w capture --force`` as a subprocess, ready when it says so
    (the demo writes its capture where it was told to, over a previous run's)."""
    argv = [sys.executable, "-m", "vuinspect", "proxy", "--no-tui", "-w", str(capture), "--force"]
    if listen is not None:
        argv += ["--listen", str(listen)]
    if connect is not None:
        argv += ["--connect", str(connect)]
    argv += list(extra)
    with running(name, argv, log_dir, on_line=on_line, stop=_stop_proxy) as proc:
        proc.wait_for(r"listening on ", 15)
        yield proc


def _stop_proxy(proc: Proc) -> None:
    """SIGTERM and a bounded wait: the proxy finishes its capture before exiting."""
    proc.send_signal(signal.SIGTERM)
    proc.wait_exit(10)


def fd_count(pid: int) -> int:
    """Open fds of a process (from /proc): what a leak check compares."""
    return len(os.listdir(f"/proc/{pid}/fd"))
