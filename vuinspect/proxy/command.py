"""Sit between QEMU and a vhost-user back-end, forward everything, show and capture it.

    vuinspect proxy --listen /tmp/vu.sock --connect /tmp/backend.sock -w cap.pcapng
    vuinspect proxy --interpose /run/qsd/vhost-blk.sock --no-tui
    vuinspect proxy --listen A --connect B -w - | wireshark -k -i -

QEMU connects to the --listen path instead of the back-end's socket (or, with
QEMU as server, the back-end connects to it and the proxy connects to QEMU);
--interpose takes over a live back-end socket in place and puts it back on exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from vuinspect.cli import CliError
from vuinspect.frames import Frame

from .interpose import ListenError
from .server import FRONTEND_CHOICES, ProxyServer, Route

try:
    from vuinspect.protocol.features import DEVICE_TYPES
except ImportError:  # pragma: no cover - the protocol tables are another module's
    DEVICE_TYPES = ("blk", "net", "fs", "scsi", "gpu", "input", "vsock", "crypto")


class _Terminate(Exception):
    """Raised in the main thread by SIGTERM/SIGHUP so ``finally`` blocks clean up."""


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return mode


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--listen", action="append", default=[], metavar="PATH",
                   help="socket path to listen on (pairs with the --connect of the same position)")
    p.add_argument("--connect", action="append", default=[], metavar="PATH",
                   help="socket path to connect to for every accepted connection")
    p.add_argument("--interpose", action="append", default=[], metavar="PATH",
                   help="take over the live back-end socket at PATH (moved to PATH.vuinspect-orig "
                        "while running, put back on exit); repeatable")
    p.add_argument("--frontend", choices=FRONTEND_CHOICES, default="auto",
                   help="which peer is QEMU: the one that connects to --listen, the one at "
                        "--connect, or auto (whoever speaks first; default)")
    p.add_argument("--device", choices=DEVICE_TYPES, help="device type, for naming feature bits")
    p.add_argument("--socket-mode", type=_mode, default=0o600, metavar="MODE",
                   help="permissions of new listen sockets (octal, default 0600); "
                        "--interpose keeps the mode and owner of the socket it takes over")
    p.add_argument("-w", "--write", metavar="FILE",
                   help="write a pcapng capture (- for stdout, e.g. into wireshark -k -i -)")
    p.add_argument("--no-tui", action="store_true",
                   help="print one summary line per message instead of the TUI")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary lines, only errors")
    # For benchmarks: the TUI's full cost on the forwarding path, without a terminal.
    p.add_argument("--tui-headless", action="store_true", help=argparse.SUPPRESS)


def routes_from_args(args: argparse.Namespace) -> list[Route]:
    if len(args.listen) != len(args.connect):
        raise CliError("--listen and --connect must come in pairs "
                       f"(got {len(args.listen)} --listen, {len(args.connect)} --connect)")
    routes = [Route(listen=lp, connect=cp, frontend=args.frontend, device=args.device)
              for lp, cp in zip(args.listen, args.connect, strict=True)]
    routes += [Route.interposed(path, frontend=args.frontend, device=args.device)
               for path in args.interpose]
    if not routes:
        raise CliError("nothing to proxy: give --listen PATH --connect PATH, or --interpose PATH")
    seen: set[str] = set()
    for r in routes:
        if r.listen in seen:
            raise CliError(f"{r.listen} is given twice as a listen path")
        seen.add(r.listen)
        if r.listen == r.connect:
            raise CliError(f"--listen and --connect are the same path: {r.listen}")
    return routes


def _summary_printer(out: IO[str], device: str | None) -> Callable[[Frame], None]:
    """Frame -> one summary line per decoded message, as ``vuinspect read`` prints them."""
    from vuinspect.pipeline import Pipeline
    from vuinspect.render import summary_line

    pipeline = Pipeline(device=device, keep_closed=False)
    write = out.write

    def show(frame: Frame) -> None:
        for msg in pipeline.feed(frame):
            write(summary_line(msg) + "\n")

    return show


def _want_tui(args: argparse.Namespace) -> bool:
    """The TUI is the default on a terminal; plain lines otherwise (or when asked)."""
    if args.no_tui or args.quiet or args.write == "-":
        return False
    if not (getattr(args, "tui_headless", False) or (sys.stdin.isatty() and sys.stdout.isatty())):
        return False
    try:
        import vuinspect.tui.app  # noqa: F401
    except ImportError:
        return False
    return True


class _Outputs:
    """The consumer side: capture writer, summary lines or the TUI feed, on the queue's thread."""

    def __init__(self, args: argparse.Namespace, *, lines: bool = True) -> None:
        self.capture: Any = None
        self.show: Callable[[Frame], None] | None = None
        self.push: Callable[[Frame], None] | None = None  # the TUI's live source
        self.text: IO[str] = sys.stderr if args.write == "-" else sys.stdout
        if args.write:
            from vuinspect.capture import CaptureError, CaptureWriter

            try:
                self.capture = CaptureWriter(args.write)
            except CaptureError as exc:
                raise CliError(str(getattr(exc, "reason", exc))) from None
        if lines and not args.quiet:
            self.show = _summary_printer(self.text, args.device)

    def sink(self, frame: Frame) -> None:
        if self.capture is not None:
            try:
                self.capture.write(frame)
            except (OSError, ValueError) as exc:
                self._capture_failed(exc)
        if self.show is not None:
            self.show(frame)
        if self.push is not None:
            self.push(frame)

    def idle(self) -> None:
        if self.capture is not None:
            try:
                self.capture.flush()
            except OSError as exc:
                self._capture_failed(exc)
        if self.show is not None:
            with contextlib.suppress(OSError, ValueError):
                self.text.flush()

    def _capture_failed(self, exc: Exception) -> None:
        print(f"vuinspect proxy: capture stopped ({exc}); forwarding continues", file=sys.stderr)
        capture, self.capture = self.capture, None
        with contextlib.suppress(Exception):
            capture.close()

    def close(self) -> None:
        if self.capture is not None:
            try:
                self.capture.close()
            except OSError as exc:
                print(f"vuinspect proxy: could not finish the capture: {exc}", file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):
            self.text.flush()


def _raise_terminate(signum: int, _frame: object) -> None:
    raise _Terminate(signal.Signals(signum).name)


def _run_tui(args: argparse.Namespace, routes: list[Route], outputs: _Outputs) -> None:
    """Show the live feed in the TUI until the user quits it (or SIGTERM/SIGHUP)."""
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.sources import LiveSource

    source = LiveSource(", ".join(r.shown for r in routes))
    outputs.push = source.push
    app = VuInspectApp(source, device=args.device)
    quit_requested = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        quit_requested.set()  # the app is asked to exit from a helper thread, never from here

    def watcher() -> None:
        quit_requested.wait()
        with contextlib.suppress(Exception):
            app.call_from_thread(app.exit)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
    threading.Thread(target=watcher, daemon=True, name="vuinspect-tui-quit").start()
    try:
        app.run(headless=bool(getattr(args, "tui_headless", False)))
    finally:
        quit_requested.set()
        source.end()


def run(args: argparse.Namespace) -> int:
    routes = routes_from_args(args)
    tui = _want_tui(args)
    outputs = _Outputs(args, lines=not tui)
    # The consumer thread (decode, capture) holds the GIL in bursts; a forwarding thread that
    # woke up waits at most this long for it (default 5 ms would show in reply latencies).
    sys.setswitchinterval(0.0005)
    # Nothing to show or capture (-q without -w): no frames are built or queued at all.
    wanted = tui or outputs.capture is not None or outputs.show is not None
    server = ProxyServer(routes, outputs.sink if wanted else None, socket_mode=args.socket_mode,
                         on_idle=outputs.idle)
    server.on_error = lambda text: print(f"vuinspect proxy: {text}", file=sys.stderr, flush=True)
    main_thread = threading.current_thread() is threading.main_thread()
    old: dict[int, Any] = {}
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _raise_terminate)
    # Last resort: interposed sockets go back and the capture is finished even on odd exits.
    atexit.register(outputs.close)
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
            print(f"listening on {r.listen} -> {r.connect}{extra}", file=sys.stderr, flush=True)
        if tui:
            server.on_error = None  # stderr would scribble over the screen; the TUI shows closes
            _run_tui(args, routes, outputs)
        else:
            while not server.wait(0.5):
                pass
    except (KeyboardInterrupt, _Terminate):
        pass
    finally:
        # Ignore further signals while finishing: a second Ctrl-C must not cut the capture short.
        if main_thread:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError):
                    signal.signal(sig, signal.SIG_IGN)
        server.stop()
        outputs.close()
        atexit.unregister(server.stop)
        atexit.unregister(outputs.close)
        if main_thread:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if not args.quiet:
        st = server.stats()
        print(f"vuinspect proxy: {st['connections_total']} connection(s), "
              f"{st['frames_forwarded']} message(s) forwarded, "
              f"{st['frames_dropped']} frame(s) dropped from the capture", file=sys.stderr)
    return 0
