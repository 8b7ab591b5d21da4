"""The forwarding side of ``vuinspect proxy``: relay and capture, nothing else.

It runs in the ``vuinspect proxy`` process itself when nothing has to be
decoded (``-q``), and otherwise as a child process that the viewer (viewer.py)
starts: decoding a message and drawing the TUI hold the GIL for tens of µs,
which a forwarding thread in the same process would wait for on every reply.
The only capture work left here is encoding pcapng (~1 µs a frame, on the
forwarding thread, recorder.py), for the ``-w`` file and the viewer's pipe.

A viewer that goes away never stops the forwarding: the pipe is then simply
no longer written (a VM must not break because a terminal was closed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import select
import signal
import sys
import threading
from typing import Any

from vuinspect.capture import CaptureError
from vuinspect.cli import CliError

from .interpose import ListenError
from .recorder import Recorder
from .server import ProxyServer, Route


class Terminate(Exception):
    """Raised in the main thread by SIGTERM/SIGHUP so ``finally`` blocks clean up."""


def _raise_terminate(signum: int, _frame: object) -> None:
    raise Terminate(signal.Signals(signum).name)


class _Closer:
    """Finishes the capture once (at the end of the run, or at exit as a last resort)."""

    def __init__(self, recorder: Recorder | None) -> None:
        self.recorder = recorder

    def close(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.close()


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
    recorder = None
    if args.write or feed_fd is not None:
        try:
            recorder = Recorder(args.write, feed_fd, on_error=say)
        except CaptureError as exc:
            raise CliError(str(getattr(exc, "reason", exc))) from None
        if status_fd is not None:
            recorder.on_feed_cut = lambda: _status(status_fd, "cut")
    # Another thread may hold the GIL when a forwarding thread wakes up; the latter waits at
    # most this long for it (the default 5 ms would show in reply latencies).
    sys.setswitchinterval(0.0005)
    server = ProxyServer(routes, None, socket_mode=args.socket_mode, recorder=recorder)
    captures = _Closer(recorder)
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
            if recorder is not None:
                recorder.start()
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
        paths = _path_ids(routes)
        while not server.wait(0.5):
            if status_fd is not None and _viewer_gone(status_fd) and not server.active_links \
                    and not _reachable(paths):
                break  # orphaned, idle, and no path leads here any more: nobody can need us
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


def _path_ids(routes: list[Route]) -> dict[str, tuple[int, int]]:
    """(st_dev, st_ino) of every listen path, as it is right after binding."""
    ids = {}
    for r in routes:
        with contextlib.suppress(OSError):
            st = os.stat(r.listen)
            ids[r.listen] = (st.st_dev, st.st_ino)
    return ids


def _reachable(ids: dict[str, tuple[int, int]]) -> bool:
    """Does any listen path still lead to our socket (not deleted, not replaced)?"""
    for path, ident in ids.items():
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == ident:
                return True
    return False


def _viewer_gone(status_fd: int) -> bool:
    """The viewer closed its end of the status pipe (it exited, maybe by SIGKILL).

    A viewer that dies leaves us forwarding; but an orphan that is idle and
    whose listen paths were removed (a test's temporary directory) would
    otherwise wait forever for connections that cannot come.
    """
    p = select.poll()
    p.register(status_fd, 0)  # a pipe's write end reports POLLERR once no reader is left
    return bool(p.poll(0))


def _status(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())
