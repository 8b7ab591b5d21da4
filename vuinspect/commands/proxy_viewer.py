"""The showing side of ``vuinspect proxy``: summary lines or the TUI, in a child process.

Decoding a message costs ~15 µs of Python and the TUI redraws for
milliseconds, all holding the GIL.  In the forwarding process that time would
land on the replies waiting to be forwarded (measured on 2 vCPUs: the p99 of
the added round trip went from tens of µs to 0.5 ms with summary lines and to
1.4 ms with the TUI).  So the ``vuinspect proxy`` process forwards and
captures (proxy_engine.py), and starts this viewer as a child that reads the pcapng
stream the engine writes to a pipe and decodes it here, at the lowest CPU
priority.

Why the forwarding process is the parent: the pid a user or a script knows
(for signals, for ``/proc``) is the one holding the VM's sockets; a viewer
that crashes leaves the forwarding untouched (a VM must not break because a
display did); and when the forwarding process goes, its viewer sees the
stream end and goes too: no orphan is ever left holding a VM's socket.

The viewer ends when the stream does (summary lines), or when the user quits
the TUI (the engine then stops) or the engine stops it with SIGTERM.  SIGINT
(and, for summary lines, SIGTERM) is the engine's business: on Ctrl-C or a
kill of the process group the viewer reads on to the end of the stream, so
every line is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from vuinspect.proxy.server import Route

if TYPE_CHECKING:  # (Textual is imported only when the TUI runs)
    from vuinspect.tui.app import VuInspectApp

#: Niceness of the viewer: decoding takes a whole core at full message rates, and the
#: forwarding and the VM's own processes must always go first.  Measured on 2 vCPUs,
#: summary lines, p99 of the added round trip: +460 µs at nice 0, +370 at 10, +110 at 19
#: (+130 with SCHED_IDLE).
VIEWER_NICE = 19
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
#: A viewer that used no CPU this long while the engine waits for it is blocked on its output.
STUCK_S = 1.5
#: Pipe buffer for the stream (the kernel caps it at /proc/sys/fs/pipe-max-size, 1 MiB).
PIPE_SIZE = 1 << 20


class FeedFile:
    """Read side of the engine's pipe, as CaptureReader wants it (``read1``).

    ``on_wait`` runs whenever the next read would block: the moment to flush
    what was printed, so output is neither line-buffered nor held back.
    """

    name = "<proxy engine>"

    def __init__(self, fd: int, on_wait: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.on_wait = on_wait

    def read1(self, n: int = -1) -> bytes:
        if self.on_wait is not None and not select.select([self.fd], [], [], 0)[0]:
            self.on_wait()
        return os.read(self.fd, n if n > 0 else 1 << 20)

    read = read1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


# -- the engine's side: starting and stopping the viewer ----------------------------------------
class Viewer:
    """The viewer child as the engine sees it: the pipe it writes, the process it waits for."""

    def __init__(self, args: argparse.Namespace, tui: bool) -> None:
        self.tui = tui
        #: The TUI's control socket (the intercept's commands, holds.py); None for lines.
        self.control: socket.socket | None = None
        child_control: socket.socket | None = None
        if tui:
            self.control, child_control = socket.socketpair()
        read_fd, self.feed_fd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.feed_fd, _F_SETPIPE_SZ, PIPE_SIZE)
        # The child starts with the stop signals blocked (the mask survives exec) until it has
        # set up its own handling (run_view): a Ctrl-C during its start-up must not kill it.
        main = threading.current_thread() is threading.main_thread()
        if main:
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            ctl = child_control.fileno() if child_control is not None else None
            self.proc = subprocess.Popen(
                viewer_argv(args, read_fd, tui, ctl),
                pass_fds=(read_fd,) if ctl is None else (read_fd, ctl),
                stdin=None if tui else subprocess.DEVNULL,
            )
        except OSError:
            os.close(self.feed_fd)
            if self.control is not None:
                self.control.close()
            raise
        finally:
            os.close(read_fd)
            if child_control is not None:
                child_control.close()
            if main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def ended(self) -> int | None:
        """The viewer's exit code once it has ended (None while it runs)."""
        return self.proc.poll()

    def stop(self, timeout: float, stuck: float = STUCK_S) -> int:
        """End of the run (the stream is closed already): wait for it, bounded.

        It gets up to ``timeout`` while it works (printing the rest of the
        stream), but is ended once it used no CPU for ``stuck`` seconds: its
        own output is blocked (a pipe nobody reads), and a stop must not wait
        for that.  ``self.stuck`` then tells.
        """
        self.stuck = False
        if self.tui and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)  # leave the TUI
        deadline = time.monotonic() + timeout
        last, since = _progress(self.proc.pid), time.monotonic()
        while time.monotonic() < deadline:
            try:
                return self.proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
            now = _progress(self.proc.pid)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > stuck:
                self.stuck = True
                break
        self.proc.kill()
        return self.proc.wait()


def _progress(pid: int) -> tuple[int, str]:
    """CPU time the process used so far (clock ticks) and its state letter; a runnable
    process (R) counts as progressing even if the CPU is busy elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "R":
            return time.monotonic_ns(), "R"
        return int(fields[11]) + int(fields[12]), fields[0]  # utime, stime
    except (OSError, IndexError, ValueError):
        return -1, "?"


def viewer_argv(
    args: argparse.Namespace, feed_fd: int, tui: bool, control_fd: int | None = None
) -> list[str]:
    """The child's command line: what it needs to label and decode, plus the pipe
    (and the TUI's control socket)."""
    argv = [sys.executable, "-m", "vuinspect", "proxy"]
    for lp, cp in zip(args.listen, args.connect, strict=True):
        argv += ["--listen", lp, "--connect", cp]
    for path in args.interpose:
        argv += ["--interpose", path]
    if args.device:
        argv += ["--device", args.device]
    if args.write:
        argv += ["-w", args.write]
    if not tui:
        argv.append("--no-tui")
    elif getattr(args, "tui_headless", False):
        argv.append("--tui-headless")
    if control_fd is not None:
        argv += ["--control-fd", str(control_fd)]
    return [*argv, "--view-fd", str(feed_fd)]


# -- the viewer process --------------------------------------------------------------------------
def _orphaned(parent: int, wait: float = 1.0) -> bool:
    """Has the forwarding process (our parent) gone?  (Asked when the stream ended: it was
    either stopped, or cut off for falling behind with the proxy still running.)"""
    deadline = time.monotonic() + wait
    while os.getppid() == parent:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # the stream ends as the parent's files close, a moment before it exits
    return True


def run_view(args: argparse.Namespace, routes: list[Route], feed_fd: int, tui: bool) -> int:
    """The viewer child's main: show the stream on ``feed_fd`` until it ends (or the TUI quits)."""
    with contextlib.suppress(OSError):
        os.nice(VIEWER_NICE)  # (Linux: per thread, so before any thread is started)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C or a kill of the whole process group: the engine stops and closes the
        # stream, and we print to its end.  (The TUI takes SIGTERM as "quit", see _tui.)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not tui:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by Viewer()
    if tui:
        _tui(feed_fd, args, routes)  # (unblocks the stop signals once it handles them)
    else:
        _lines(feed_fd, sys.stderr if args.write == "-" else sys.stdout, args.device)
    return 0


def _lines(feed_fd: int, out: IO[str], device: str | None) -> None:
    """Print one summary line per decoded message until the stream ends."""
    from vuinspect.capture import CaptureError, CaptureReader
    from vuinspect.lines import summary_printer

    show = summary_printer(out, device)

    def flush() -> None:
        with contextlib.suppress(OSError, ValueError):
            out.flush()

    errors = 0
    try:
        reader = CaptureReader(FeedFile(feed_fd, flush))
    except CaptureError:
        return  # the engine stopped before its stream began (and said why)
    with reader:
        for frame in reader:
            try:
                show(frame)
            except (BrokenPipeError, ValueError):
                raise
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the stream being read
                errors += 1
                if errors <= 3:
                    print(f"vuinspect proxy: could not show a frame: {exc!r}", file=sys.stderr)
    flush()


def _tui(feed_fd: int, args: argparse.Namespace, routes: list[Route]) -> None:
    """Run the TUI on the stream until the user quits it, or SIGTERM/SIGHUP."""
    from vuinspect.capture import CaptureReader
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.intercept import Control, Holds
    from vuinspect.tui.launch import crash_error, run_app
    from vuinspect.tui.sources import LiveSource

    source = LiveSource(
        ", ".join(r.shown for r in routes),
        listening=[(r.listen, r.connect) for r in routes],
        peer_connects="backend" if routes[0].frontend == "connect" else "frontend",
    )
    holds = Holds()  # what the engine holds, from the intercept's notes in the stream

    def feed() -> None:
        try:
            with CaptureReader(FeedFile(feed_fd)) as reader:
                for frame in reader:
                    holds.observe(frame)
                    source.push(frame)
        except Exception:  # noqa: BLE001 - the engine ended before its stream began
            pass
        finally:
            source.end()  # the view then settles: unanswered requests get their problems
            if headless or _orphaned(parent):
                quit_requested.set()  # nobody looks at it, or the proxy is gone: end too

    headless = bool(getattr(args, "tui_headless", False))
    parent = os.getppid()
    control_fd = getattr(args, "control_fd", None)
    control = None
    if control_fd is not None:
        with contextlib.suppress(OSError):
            control = Control(control_fd, on_error=lambda text: _tell(app, text))
    app = VuInspectApp(source, device=args.device, control=control, holds=holds)
    quit_requested = threading.Event()
    finished = threading.Event()
    threading.Thread(target=feed, daemon=True, name="vuinspect-feed").start()

    def on_signal(_signum: int, _frame: object) -> None:
        quit_requested.set()  # the app is asked to exit from a helper thread, never from here

    def watcher() -> None:
        quit_requested.wait()
        # A request that comes while the app is still starting must not be lost.
        while not finished.is_set():
            try:
                app.call_from_thread(app.exit)
                return
            except Exception:  # noqa: BLE001 - not running yet (or any more)
                finished.wait(0.05)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    threading.Thread(target=watcher, daemon=True, name="vuinspect-tui-quit").start()
    try:
        crash = run_app(app, headless=headless)
    finally:
        finished.set()
        quit_requested.set()
        source.end()
        if control is not None:
            control.close()  # the engine releases what is still held
    if crash is not None:
        raise crash_error(crash)


def _tell(app: VuInspectApp, text: str) -> None:
    """An error line from the engine's control socket, shown in the TUI."""
    with contextlib.suppress(Exception):
        app.call_from_thread(app.notify, text, severity="error", markup=False)
