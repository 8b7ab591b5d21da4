"""The forwarding engine: relay, rules, ring sampler and capture, run until a stop.

One engine for every host: ``vuinspect proxy`` (commands/proxy_engine.py adds its
viewer child on top) and the Wireshark extcap (wireshark/extcap.py, writing into
Wireshark's FIFO).  So the rules, the ring sampler, ``--trace-notify``, the capture
budget and the stop (SIGINT/SIGTERM/SIGHUP, within ~2 s whatever the outputs do)
are the same for both by construction.  It sits here, below the commands, because
the extcap is a face and may not import a command (tests/package/test_imports.py).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from vuinspect.capture import CaptureError
from vuinspect.dataplane.notify import Notifier
from vuinspect.dataplane.sampler import Sampler
from vuinspect.errors import CliError

from .interpose import ListenError
from .recorder import BUDGET, STOP_S, Recorder
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
    """One line on stderr; a closed stderr is no reason to fail."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def summary(stats: dict[str, int], recorder: Recorder | None = None) -> str:
    filtered = recorder.filtered if recorder is not None else 0
    return (
        f"vuinspect proxy: {stats['connections_total']} connection(s), "
        f"{stats['frames_forwarded']} message(s) forwarded, "
        f"{stats['frames_dropped']} frame(s) dropped from the capture"
        + (f", {filtered} left out by the capture filter" if filtered else "")
    )


def _sampler(args: argparse.Namespace, recorder: Recorder | None) -> Sampler | None:
    """The ring sampler (--rings), on whenever something records the traffic."""
    interval = getattr(args, "rings", None)
    if recorder is None or interval == 0:
        return None
    sampler = Sampler(recorder.sampled, interval or 0.1, device=args.device)
    if getattr(args, "trace_notify", False):
        sampler.notifier = Notifier(recorder.sampled)
    recorder.sampler = sampler
    return sampler


class Engine:
    """The proxy's forwarding process, built from the ``vuinspect proxy`` options.

    ``args`` holds the parsed options (``write``, ``force``, ``capture_buffer``,
    ``limits``, ``capture_filter`` (text, or compiled), ``device``, ``rings``, ``trace_notify``,
    ``ruleset``, ``socket_mode``, ``quiet``); ``feed_fd`` is a viewer's pipe.
    ``out`` gets every line the engine prints.  With ``stop_on_capture_error``
    a failed ``-w`` output ends the run (the extcap: Wireshark went away)
    instead of the forwarding going on without it.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        routes: list[Route],
        feed_fd: int | None = None,
        *,
        out: Callable[[str], None] = say,
        stop_on_capture_error: bool = False,
    ) -> None:
        self.args = args
        self.routes = routes
        self.out = out
        self.failed = threading.Event()
        self.recorder: Recorder | None = None
        info = (lambda _text: None) if args.quiet else out
        on_error = out
        if stop_on_capture_error:

            def on_error(text: str) -> None:
                out(text)
                self.failed.set()

        if args.write or feed_fd is not None:
            # The -w target is opened only once listening worked (see run): a refused
            # start leaves it untouched.
            self.recorder = Recorder(
                args.write,
                feed_fd,
                on_error=on_error,
                on_info=info,
                on_warning=out,
                budget=getattr(args, "capture_buffer", None) or BUDGET,
                limits=getattr(args, "limits", None),
                capture_filter=getattr(args, "capture_filter", None),
                device=args.device,
                force=getattr(args, "force", False),
                defer=True,
            )
        self.sampler = _sampler(args, self.recorder)
        # Another thread may hold the GIL when a forwarding thread wakes up; the latter waits
        # at most this long for it (the default 5 ms would show in reply latencies).
        sys.setswitchinterval(0.0005)
        self.server = ProxyServer(
            routes, None, socket_mode=args.socket_mode, recorder=self.recorder
        )
        self.server.rules = getattr(args, "ruleset", None)
        self.server.on_error = lambda text: out(f"vuinspect proxy: {text}")

    def run(
        self,
        poll: Callable[[], bool] | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        """Relay until SIGINT/SIGTERM/SIGHUP, the server ends or ``poll()`` (every 0.5 s)
        says stop.  ``on_stopped`` runs once the capture is finished, before the signal
        handlers are put back.  A refused start raises CliError (after the clean-up)."""
        server, recorder, sampler = self.server, self.recorder, self.sampler
        captures = _Closer(recorder)
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
                if recorder is not None:
                    recorder.open()
                    recorder.start()
                if sampler is not None:
                    sampler.start()
            except ListenError as exc:
                raise CliError(str(exc)) from None
            except CaptureError as exc:
                raise CliError(str(getattr(exc, "reason", exc))) from None
            finally:
                if main_thread:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
            for r in self.routes:  # (also with -q: scripts wait for it, as for tshark's)
                extra = " (interposed)" if r.interpose else ""
                self.out(f"listening on {r.listen} -> {r.connect}{extra}")
            while not server.wait(0.5) and not self.failed.is_set():
                if poll is not None and poll():
                    break
        except (KeyboardInterrupt, Terminate):
            pass
        finally:
            # Ignore further signals while finishing: a second Ctrl-C must not cut the
            # capture short.
            if main_thread:
                for sig in stop_signals:
                    with contextlib.suppress(ValueError):
                        signal.signal(sig, signal.SIG_IGN)
            server.stop()
            if sampler is not None:
                sampler.stop()  # the last ring samples go in before the capture ends; unmapped
            captures.close()  # the stream ends: a viewer prints the rest and exits
            if on_stopped is not None:
                on_stopped()
            atexit.unregister(server.stop)
            atexit.unregister(captures.close)
            if main_thread:
                for signum, handler in old.items():
                    signal.signal(signum, handler)
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def report(self) -> None:
        """The end of a run in a few lines: what the capture lost, the counts, the rules."""
        recorder = self.recorder
        if recorder is not None and recorder.unwritten:
            self.out(
                f"vuinspect proxy: {recorder.unwritten} frame(s) could not be written to the "
                f"capture (its output took nothing for {STOP_S:g} s); stopped without them"
            )
        if not self.args.quiet:
            self.out(summary(self.server.stats(), recorder))
        rules = self.server.rules  # (falsy with an idle intercept: summed up)
        if rules is not None and (text := rules.summary()):
            self.out(f"vuinspect proxy: {text}")
