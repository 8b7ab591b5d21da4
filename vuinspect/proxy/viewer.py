"""The showing side of ``vuinspect proxy``: summary lines or the TUI, fed by a child process.

Decoding a message costs ~20 µs of Python and the TUI redraws for
milliseconds, all holding the GIL.  In the forwarding process that time would
land on the replies waiting to be forwarded (measured: p99 of the added
latency went from tens of µs to 0.6 ms with summary lines and to 1.5 ms with
the TUI), so this process only shows: it starts the forwarding engine
(engine.py) as a child, reads the pcapng stream the child writes to a pipe,
and decodes it here.

Signals: SIGINT/SIGTERM/SIGHUP are passed to the child, which puts
interposed sockets back and finishes the capture; this process then reads
the stream to its end and prints the summary.  The child stays in our
process group, so job control (Ctrl-C, Ctrl-Z, a closed terminal, a kill of
the group) treats the two as one job, as before the split; but when only this
process dies (a crash, a SIGKILL of its pid) the child keeps forwarding and
just stops writing the pipe: a VM must not break because its viewer did.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from .engine import say, summary
from .server import Route

CUT_MESSAGE = ("vuinspect proxy: the display fell too far behind and stopped; forwarding and "
               "the -w capture go on (stop with Ctrl-C or SIGTERM)")
#: Niceness added to the viewer process once the engine has been started (see run_viewer).
VIEWER_NICE = 19
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Pipe buffer for the stream (the kernel caps it at /proc/sys/fs/pipe-max-size, 1 MiB).
PIPE_SIZE = 1 << 20


class FeedFile:
    """Read side of the child's pipe, as CaptureReader wants it (``read1``).

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


def engine_argv(args: argparse.Namespace, feed_fd: int, status_fd: int, show_errors: bool) -> list[str]:
    """The child's command line: the same routes and capture, plus the pipes."""
    argv = [sys.executable, "-m", "vuinspect", "proxy"]
    for lp, cp in zip(args.listen, args.connect, strict=True):
        argv += ["--listen", lp, "--connect", cp]
    for path in args.interpose:
        argv += ["--interpose", path]
    argv += ["--frontend", args.frontend, "--socket-mode", f"{args.socket_mode:o}"]
    if args.device:
        argv += ["--device", args.device]
    if args.write:
        argv += ["-w", args.write]
    argv += ["--no-tui", "-q", "--engine-fds", f"{feed_fd},{status_fd}"]
    if not show_errors:
        argv.append("--engine-quiet-errors")
    return argv


class Engine:
    """The forwarding child process and its two pipes (capture stream, status lines)."""

    def __init__(self, args: argparse.Namespace, show_errors: bool) -> None:
        feed_r, feed_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(feed_w, _F_SETPIPE_SZ, PIPE_SIZE)
        try:
            self.proc = subprocess.Popen(
                engine_argv(args, feed_w, status_w, show_errors), stdin=subprocess.DEVNULL,
                pass_fds=(feed_w, status_w))
        finally:
            os.close(feed_w)
            os.close(status_w)
        self.feed_fd = feed_r
        self.stats: dict[str, int] | None = None
        self.cut = False
        self.status = os.fdopen(status_r, "r", encoding="utf-8", errors="replace")

    def ready(self) -> bool:
        """Wait until the child listens (True) or has failed (False; it said why on stderr)."""
        return self.status.readline().strip() == "ready"

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stream_ended(self) -> None:
        """The capture stream ended: say so if the child cut us off rather than stopped."""
        line = self.status.readline()
        if line.startswith("stats "):
            with contextlib.suppress(ValueError):
                self.stats = json.loads(line[6:])
        elif line.strip() == "cut":
            self.cut = True
            say(CUT_MESSAGE)

    def finish(self) -> tuple[int, dict[str, int] | None]:
        """Wait for the child; its exit code and final counters (None if it reported none)."""
        if not self.status.closed:
            for line in self.status:
                if line.startswith("stats "):
                    with contextlib.suppress(ValueError):
                        self.stats = json.loads(line[6:])
                elif line.strip() == "cut" and not self.cut:
                    self.cut = True
                    say(CUT_MESSAGE)
            self.status.close()
            with contextlib.suppress(OSError):
                os.close(self.feed_fd)
        return self.proc.wait(), self.stats


def _forwarding_signals(engine: Engine) -> dict[int, object]:
    """Pass stop signals on to the child; we stop when its stream ends."""
    old: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, lambda signum, _f: engine.signal(signum))
    return old


def _lines(engine: Engine, out: IO[str], device: str | None) -> None:
    """Print one summary line per decoded message until the child's stream ends."""
    from vuinspect.capture import CaptureReader

    from .command import summary_printer

    show = summary_printer(out, device)

    def flush() -> None:
        with contextlib.suppress(OSError, ValueError):
            out.flush()

    errors = 0
    with CaptureReader(FeedFile(engine.feed_fd, flush)) as reader:  # type: ignore[arg-type]
        for frame in reader:
            try:
                show(frame)
            except (BrokenPipeError, ValueError):
                raise
            except Exception as exc:  # a decoder bug must not stop the stream being read
                errors += 1
                if errors <= 3:
                    say(f"vuinspect proxy: could not show a frame: {exc!r}")
    flush()
    engine.stream_ended()


def _tui(engine: Engine, args: argparse.Namespace, routes: list[Route]) -> None:
    """Run the TUI on the child's stream until the user quits it (or SIGTERM/SIGHUP)."""
    from vuinspect.capture import CaptureReader
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.sources import LiveSource

    source = LiveSource(", ".join(r.shown for r in routes))

    def feed() -> None:
        try:
            with CaptureReader(FeedFile(engine.feed_fd)) as reader:  # type: ignore[arg-type]
                for frame in reader:
                    source.push(frame)
        except Exception:  # noqa: BLE001 - the child died before its stream began
            pass
        finally:
            source.end()  # (a cut-off stream is reported once the TUI is gone)

    reader = threading.Thread(target=feed, daemon=True, name="vuinspect-feed")
    reader.start()
    app = VuInspectApp(source, device=args.device)
    quit_requested = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        quit_requested.set()  # the app is asked to exit from a helper thread, never from here

    def watcher() -> None:
        quit_requested.wait()
        with contextlib.suppress(Exception):
            app.call_from_thread(app.exit)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
    threading.Thread(target=watcher, daemon=True, name="vuinspect-tui-quit").start()
    try:
        app.run(headless=bool(getattr(args, "tui_headless", False)))
    finally:
        quit_requested.set()
        engine.signal(signal.SIGTERM)
        reader.join(30)


def run_viewer(args: argparse.Namespace, routes: list[Route], tui: bool) -> int:
    """Start the engine child, show its stream, pass signals on; the CLI's exit code."""
    engine = Engine(args, show_errors=not tui)
    # Decoding takes ~15 µs a message, a whole core at full message rates: let the forwarding
    # child and the VM's processes always go first.  Measured on 2 vCPUs, summary lines, p99
    # of the added round trip: +460 µs at nice 0, +370 at 10, +110 at 19 (+130 SCHED_IDLE).
    # (Linux: per thread, so before any thread is started.)
    with contextlib.suppress(OSError):
        os.nice(VIEWER_NICE)
    old = _forwarding_signals(engine)
    try:
        if not engine.ready():  # it could not listen or open the capture, and said so
            rc, _ = engine.finish()
            return rc if rc > 0 else 1
        if tui:
            _tui(engine, args, routes)
        else:
            _lines(engine, sys.stderr if args.write == "-" else sys.stdout, args.device)
    except BaseException:
        engine.signal(signal.SIGTERM)
        raise
    finally:
        rc, stats = engine.finish()
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    if rc != 0:
        why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        say(f"vuinspect proxy: the forwarding process ended unexpectedly ({why})")
        return 1
    if stats is not None and not args.quiet:
        say(summary(stats))
    return 0
