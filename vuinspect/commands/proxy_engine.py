"""The forwarding side of ``vuinspect proxy``: the engine plus its viewer child.

This is the ``vuinspect proxy`` process itself.  The forwarding is the one engine
(vuinspect/proxy/engine.py: server, recorder, ring sampler, rules, stop) that the
Wireshark extcap runs too; this module adds the viewer and the TUI's intercept
control.  Decoding and showing (summary
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
import contextlib
import json
import os
import socket
import threading
from typing import Any

from vuinspect.proxy.engine import Engine, say
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.render import safe_text

#: How long the end of a run waits for the viewer to print what is still in the pipe.
VIEWER_DRAIN_S = 60.0
CUT_MESSAGE = (
    "vuinspect proxy: the display fell too far behind and stopped; forwarding and "
    "the -w capture go on (stop with Ctrl-C or SIGTERM)"
)


def say_escaped(text: str) -> None:
    """The engine's lines (they name listen and connect paths, which anyone may choose),
    escaped before the terminal shows them."""
    say(safe_text(text))


def with_intercept(server: ProxyServer, device: str | None, intercept: Any = None) -> Any:
    """Add the TUI's intercept (holds.py) to the server's rules; returns it.

    While no filter is set it costs nothing (the links keep their fast path); setting
    one makes every link judge from its next message on, clearing it stops that.
    """
    from vuinspect.holds import Intercept
    from vuinspect.rules import RuleSet

    if intercept is None:
        intercept = Intercept(device)
    ruleset = server.rules
    if ruleset is None:
        ruleset = RuleSet([], device=device)
    ruleset.intercept = intercept
    server.rules = ruleset

    def links_follow() -> None:
        for link in list(getattr(server, "_links", ())):  # (a set; list() copies it at once)
            link.rules_changed()

    def on_change() -> None:
        links_follow()
        # Once more a moment later: a link made just then read the rules in its __init__
        # (relay.py) before it joined server._links, so the pass above missed it.
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
    pipe, None to show nothing (``-q``).  The forwarding itself is the one engine
    (proxy/engine.py) the Wireshark extcap runs too.
    """
    from .proxy_viewer import Viewer

    tui = view == "tui"
    viewer: Viewer | None = None
    cut = threading.Event()
    try:
        if view is not None:
            viewer = Viewer(args, tui)
        engine = Engine(args, routes, viewer.feed_fd if viewer else None, out=say_escaped)
    except BaseException:
        if viewer is not None:
            with contextlib.suppress(OSError):
                os.close(viewer.feed_fd)
            viewer.stop(5)
        raise
    if engine.recorder is not None and viewer is not None:
        engine.recorder.on_feed_cut = cut.set
    if viewer is not None and viewer.control is not None:
        intercept = with_intercept(engine.server, args.device)
        threading.Thread(
            target=serve_control,
            args=(viewer.control, intercept),
            daemon=True,
            name="vuinspect-control",
        ).start()
    if tui:
        engine.server.on_error = None  # (not over the TUI)

    def poll() -> bool:
        nonlocal viewer
        if cut.is_set() and not tui and not args.quiet:
            cut.clear()
            say(CUT_MESSAGE)
        if viewer is not None and (rc := viewer.ended()) is not None:
            if tui and rc == 0:
                return True  # the user quit the TUI
            say(
                f"vuinspect proxy: the {'TUI' if tui else 'display'} ended unexpectedly "
                f"(exit code {rc}); forwarding and the capture go on "
                "(stop with Ctrl-C or SIGTERM)"
            )
            viewer = None
        return False

    def stopped() -> None:
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

    engine.run(poll, stopped)
    if cut.is_set() and not args.quiet:
        say(CUT_MESSAGE)
    engine.report()
    return 0
