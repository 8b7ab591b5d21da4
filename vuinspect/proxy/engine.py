"""The forwarding side of ``vuinspect proxy``: relay and capture, nothing else.

It runs in the ``vuinspect proxy`` process itself when nothing has to be
decoded (``-q``), and otherwise as a child process that the viewer (viewer.py)
starts: decoding a message and drawing the TUI hold the GIL for tens of µs,
which a forwarding thread in the same process would wait for on every reply.
The only consumer work left here is encoding pcapng (~2 µs a frame), to the
``-w`` file and, for the viewer, to a pipe.

A viewer that goes away never stops the forwarding: the pipe is then simply
no longer written (a VM must not break because a terminal was closed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any

from vuinspect.cli import CliError
from vuinspect.frames import Frame

from .interpose import ListenError
from .server import ProxyServer, Route


class Terminate(Exception):
    """Raised in the main thread by SIGTERM/SIGHUP so ``finally`` blocks clean up."""


def _raise_terminate(signum: int, _frame: object) -> None:
    raise Terminate(signal.Signals(signum).name)


class FeedPipe:
    """The capture stream to the viewer: blocking writes, silently dropped once it is gone.

    Blocking, because a pcapng stream with a block missing cannot be read on;
    a viewer that falls behind makes the frame queue fill up, and frames are
    then dropped (and noted) before they are encoded, never half-written.
    """

    name = "<viewer pipe>"

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.gone = False

    def write(self, buf: bytes) -> int:
        if not self.gone:
            view = memoryview(buf)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:  # EPIPE: the viewer exited; keep forwarding without it
                self.gone = True
                with contextlib.suppress(OSError):
                    os.close(self.fd)
        return len(buf)

    def flush(self) -> None:
        pass


class Captures:
    """The consumer of the forwarding process: CaptureWriters, flushed when the queue runs dry."""

    def __init__(self, path: str | None, feed_fd: int | None) -> None:
        from vuinspect.capture import CaptureError, CaptureWriter

        self.writers: list[Any] = []
        self.feed: FeedPipe | None = None
        if path:
            try:
                self.writers.append(CaptureWriter(path))
            except CaptureError as exc:
                raise CliError(str(getattr(exc, "reason", exc))) from None
        if feed_fd is not None:
            self.feed = FeedPipe(feed_fd)
            self.writers.append(CaptureWriter(self.feed))  # type: ignore[arg-type]

    def sink(self, frame: Frame) -> None:
        for w in self.writers:
            try:
                w.write(frame)
            except (OSError, ValueError) as exc:
                self._failed(w, exc)

    def idle(self) -> None:
        for w in self.writers:
            try:
                w.flush()
            except OSError as exc:
                self._failed(w, exc)

    def _failed(self, writer: Any, exc: Exception) -> None:
        say(f"vuinspect proxy: capture stopped ({exc}); forwarding continues")
        self.writers.remove(writer)
        with contextlib.suppress(Exception):
            writer.close()

    def close(self) -> None:
        for w in self.writers:
            try:
                w.close()
            except OSError as exc:
                say(f"vuinspect proxy: could not finish the capture: {exc}")
        self.writers = []


def say(text: str) -> None:
    """One line on stderr; a closed stderr (the viewer's terminal is gone) is no reason to fail."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def summary(stats: dict[str, int]) -> str:
    return (f"vuinspect proxy: {stats['connections_total']} connection(s), "
            f"{stats['frames_forwarded']} message(s) forwarded, "
            f"{stats['frames_dropped']} frame(s) dropped from the capture")


def run_engine(args: argparse.Namespace, routes: list[Route], *, feed_fd: int | None = None,
               status_fd: int | None = None, show_errors: bool = True) -> int:
    """Relay until SIGINT/SIGTERM/SIGHUP; capture to ``-w`` and the viewer's pipe.

    With a ``status_fd`` (run by a viewer) it reports ``ready`` once listening
    and its counters at the end there, instead of the summary line.
    """
    captures = Captures(args.write, feed_fd)
    # The consumer thread holds the GIL in bursts; a forwarding thread that woke up waits
    # at most this long for it (the default 5 ms would show in reply latencies).
    sys.setswitchinterval(0.0005)
    server = ProxyServer(routes, captures.sink if captures.writers else None,
                         socket_mode=args.socket_mode, on_idle=captures.idle)
    if show_errors:
        server.on_error = lambda text: say(f"vuinspect proxy: {text}")
    main_thread = threading.current_thread() is threading.main_thread()
    old: dict[int, Any] = {}
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _raise_terminate)
    # Last resort: interposed sockets go back and the capture is finished even on odd exits.
    atexit.register(captures.close)
    atexit.register(server.stop)
    stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        # A signal in the middle of moving sockets around would leave them half moved.
        if main_thread:
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            server.start()
        except ListenError as exc:
            raise CliError(str(exc)) from None
        finally:
            if main_thread:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        for r in routes:
            extra = " (interposed)" if r.interpose else ""
            say(f"listening on {r.listen} -> {r.connect}{extra}")
        if status_fd is not None:
            _status(status_fd, "ready")
        while not server.wait(0.5):
            pass
    except (KeyboardInterrupt, Terminate):
        pass
    finally:
        # Ignore further signals while finishing: a second Ctrl-C must not cut the capture short.
        if main_thread:
            for sig in stop_signals:
                with contextlib.suppress(ValueError):
                    signal.signal(sig, signal.SIG_IGN)
        server.stop()
        captures.close()
        atexit.unregister(server.stop)
        atexit.unregister(captures.close)
        if main_thread:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if status_fd is not None:
        _status(status_fd, "stats " + json.dumps(server.stats()))
    elif not args.quiet:
        say(summary(server.stats()))
    return 0


def _status(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())
