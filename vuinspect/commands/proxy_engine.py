"""The forwarding side of ``vuinspect proxy``: relay and capture, nothing else.

This is the ``vuinspect proxy`` process itself.  Decoding and showing (summary
lines, the TUI) run in a viewer child (proxy_viewer.py), because a decoder holds the
GIL for tens of µs a message, which a forwarding thread in the same process
would wait for on every reply.  The only capture work left here is encoding
pcapng (~0.5 µs a frame, on the forwarding thread, recorder.py), for the
``-w`` file and the viewer's pipe.

A viewer that fails never stops the forwarding: the pipe is then no longer
written.  The user quitting the TUI stops the proxy, as it always did.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

from vuinspect.capture import CaptureError
from vuinspect.dataplane.notify import Notifier
from vuinspect.dataplane.sampler import Sampler
from vuinspect.errors import CliError
from vuinspect.proxy.interpose import ListenError
from vuinspect.proxy.recorder import BUDGET, STOP_S, Recorder
from vuinspect.proxy.server import ProxyServer, Route

#: How long the end of a run waits for the viewer to print what is still in the pipe.
VIEWER_DRAIN_S = 60.0
CUT_MESSAGE = (
    "vuinspect proxy: the display fell too far behind and stopped; forwarding and "
    "the -w capture go on (stop with Ctrl-C or SIGTERM)"
)


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


def with_intercept(server: ProxyServer, device: str | None, intercept: Any = None) -> Any:
    """Add the TUI's intercept (holds.py) to the server's rules; returns it.

    While no filter is set it costs nothing (the links keep their fast path); setting
    one makes every link judge from its next message on, clearing it stops that.
    """
    from vuinspect.holds import Intercept
    from vuinspect.rules import RuleSet

    if intercept is None:
        intercept = Intercept(device)
    ruleset = getattr(server, "rules", None)
    if ruleset is None:
        ruleset = RuleSet([], device=device)
    ruleset.intercept = intercept
    server.rules = ruleset  # type: ignore[attr-defined]  # read by relay.py

    def links_follow() -> None:
        for link in list(getattr(server, "_links", ())):  # (a set; list() copies it at once)
            link.rules_changed()

    def on_change() -> None:
        links_follow()
        # Once more a moment later: a link thread that was just then re-deciding its fast
        # path (relay.py _received) may have put back the old answer.
        timer = threading.Timer(0.05, links_follow)
        timer.daemon = True
        timer.start()

    intercept.on_change = on_change
    return intercept


def serve_control(sock: socket.socket, intercept: Any) -> None:
    """The TUI's intercept commands, one JSON line each, until it closes its end (it quit
    or died): then everything still held is released.  A thread of its own, so the
    engine never waits for it; a line is at most MAX_COMMAND bytes; errors go back as
    ``{"error": ...}`` lines, dropped if the TUI does not read them."""
    from vuinspect.holds import MAX_COMMAND

    buf = bytearray()
    try:
        while chunk := sock.recv(1 << 16):
            buf += chunk
            while (end := buf.find(b"\n")) >= 0:
                line = bytes(buf[:end])
                del buf[: end + 1]
                error = intercept.command(line) if line.strip() else None
                if error:
                    with contextlib.suppress(OSError):
                        reply = json.dumps({"error": error}).encode() + b"\n"
                        sock.send(reply, socket.MSG_DONTWAIT)
            if len(buf) > MAX_COMMAND:
                buf.clear()  # a line too long: dropped whole
                with contextlib.suppress(OSError):
                    sock.send(b'{"error": "command too long"}\n', socket.MSG_DONTWAIT)
    except OSError:
        pass
    finally:
        intercept.match = None  # nothing more is held ...
        intercept.release_all("the TUI ended")  # ... and what is held goes on


def run_engine(args: argparse.Namespace, routes: list[Route], view: str | None = None) -> int:
    """Relay until SIGINT/SIGTERM/SIGHUP (or the user quits the TUI); capture to ``-w``.

    ``view`` is ``"lines"`` or ``"tui"`` to start a viewer child fed through a
    pipe, None to show nothing (``-q``).
    """
    from .proxy_viewer import Viewer

    tui = view == "tui"
    viewer: Viewer | None = None
    recorder = None
    cut = threading.Event()
    info = (lambda _text: None) if args.quiet else say
    try:
        if view is not None:
            viewer = Viewer(args, tui)
        if args.write or viewer is not None:
            # The -w target is opened only once listening worked (see below): a refused
            # start leaves it untouched.
            recorder = Recorder(
                args.write,
                viewer.feed_fd if viewer else None,
                on_error=say,
                on_info=info,
                budget=getattr(args, "capture_buffer", None) or BUDGET,
                limits=getattr(args, "limits", None),
                capture_filter=getattr(args, "capture_filter", None),
                device=args.device,
                force=getattr(args, "force", False),
                defer=True,
            )
    except BaseException:
        if viewer is not None:
            with contextlib.suppress(OSError):
                os.close(viewer.feed_fd)
            viewer.stop(5)
        raise
    if recorder is not None and viewer is not None:
        recorder.on_feed_cut = cut.set
    sampler = _sampler(args, recorder)
    # Another thread may hold the GIL when a forwarding thread wakes up; the latter waits at
    # most this long for it (the default 5 ms would show in reply latencies).
    sys.setswitchinterval(0.0005)
    server = ProxyServer(routes, None, socket_mode=args.socket_mode, recorder=recorder)
    server.rules = getattr(args, "ruleset", None)  # type: ignore[attr-defined]  # read by relay.py
    if viewer is not None and viewer.control is not None:
        intercept = with_intercept(server, args.device)
        threading.Thread(
            target=serve_control,
            args=(viewer.control, intercept),
            daemon=True,
            name="vuinspect-control",
        ).start()
    captures = _Closer(recorder)
    if not tui:
        server.on_error = lambda text: say(f"vuinspect proxy: {text}")  # (not over the TUI)
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
        for r in routes:  # (also with -q: scripts wait for it, as for tshark's "Capturing on")
            extra = " (interposed)" if r.interpose else ""
            say(f"listening on {r.listen} -> {r.connect}{extra}")
        while not server.wait(0.5):
            if cut.is_set() and not tui and not args.quiet:
                cut.clear()
                say(CUT_MESSAGE)
            if viewer is not None and (rc := viewer.ended()) is not None:
                if tui and rc == 0:
                    break  # the user quit the TUI
                say(
                    f"vuinspect proxy: the {'TUI' if tui else 'display'} ended unexpectedly "
                    f"(exit code {rc}); forwarding and the capture go on "
                    "(stop with Ctrl-C or SIGTERM)"
                )
                viewer = None
    except (KeyboardInterrupt, Terminate):
        pass
    finally:
        # Ignore further signals while finishing: a second Ctrl-C must not cut the capture short.
        if main_thread:
            for sig in stop_signals:
                with contextlib.suppress(ValueError):
                    signal.signal(sig, signal.SIG_IGN)
        server.stop()
        if sampler is not None:
            sampler.stop()  # the last ring samples go in before the capture ends; unmapped
        captures.close()  # the stream ends: the viewer prints the rest and exits
        if viewer is not None and viewer.control is not None:
            with contextlib.suppress(OSError):
                viewer.control.shutdown(socket.SHUT_RDWR)  # (its thread then ends)
        if viewer is not None:
            viewer.stop(VIEWER_DRAIN_S)
            if viewer.stuck:
                say(
                    f"vuinspect proxy: the {'TUI' if tui else 'display'} could not write its "
                    "output any more; stopped without waiting for it"
                )
        atexit.unregister(server.stop)
        atexit.unregister(captures.close)
        if main_thread:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if cut.is_set() and not args.quiet:
        say(CUT_MESSAGE)
    if recorder is not None and recorder.unwritten:
        say(
            f"vuinspect proxy: {recorder.unwritten} frame(s) could not be written to the "
            f"capture (its output took nothing for {STOP_S:g} s); stopped without them"
        )
    if not args.quiet:
        say(summary(server.stats(), recorder))
    rules = getattr(server, "rules", None)  # (falsy with an idle intercept: still summed up)
    if rules is not None and (text := rules.summary()):
        say(f"vuinspect proxy: {text}")
    return 0
