"""Sit between QEMU and a vhost-user back-end, forward everything, show and capture it.

Every byte and file descriptor is forwarded unchanged; what passes is shown
live (a TUI on a terminal, one line per message otherwise) and/or written to
a pcapng capture that `vuinspect read`, `vuinspect view` and Wireshark open.

examples:
  capture while QEMU connects to /tmp/vu.sock instead of the back-end's socket:
    vuinspect proxy --listen /tmp/vu.sock --connect /run/qsd/blk.sock -w blk.pcapng

  take over a running back-end's socket in place (put back on exit):
    vuinspect proxy --interpose /run/qsd/blk.sock --no-tui

  live into Wireshark:
    vuinspect proxy --listen /tmp/vu.sock --connect /run/qsd/blk.sock -w - | wireshark -k -i -

  a ring of 5 files of 10 MB each, only the messages with problems:
    vuinspect proxy --listen A --connect B -w hunt.pcapng -b filesize:10000 -b files:5 \\
        --capture-filter problems

With QEMU as the server (-chardev socket,server=on) the back-end connects to
--listen and the proxy connects to QEMU's socket; --frontend says which side
is QEMU when it cannot be told by who speaks first.
"""

from __future__ import annotations

import argparse
import os
import stat

from vuinspect.capture import CaptureError, capfile
from vuinspect.errors import CliError
from vuinspect.protocol.features import DEVICE_TYPES
from vuinspect.proxy.interpose import MAX_UNIX_PATH
from vuinspect.proxy.server import DEFAULT_CONNECT_TIMEOUT, FRONTEND_CHOICES, Route
from vuinspect.tui.launch import on_terminal
from vuinspect.units import parse_duration

from .proxy_engine import run_engine


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return mode


def rings_interval(text: str) -> float:
    """--rings: off -> 0, on -> 0.1 s, or an interval (100ms, 0.5s, 0.25) of 1 ms .. 60 s."""
    t = text.strip().lower()
    if t in ("off", "no", "0"):
        return 0.0
    if t in ("on", "yes"):
        return 0.1
    value = parse_duration(t.replace(" ", ""))
    if value is None or not 0.001 <= value <= 60:
        raise argparse.ArgumentTypeError(
            f"--rings takes off, on or an interval from 1ms to 60s, not {text!r}"
        )
    return value


def connect_timeout(text: str) -> float:
    """--connect-timeout: seconds (3, 0.5) or a duration (500ms), 0 to 1 h."""
    value = parse_duration(text.strip())
    if value is None or not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0 to 3600: {text!r}")
    return value


def _size(text: str) -> int:
    try:
        return capfile.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="PATH",
        help="socket path to listen on (pairs with the --connect of the same position)",
    )
    p.add_argument(
        "--connect",
        action="append",
        default=[],
        metavar="PATH",
        help="socket path to connect to for every accepted connection",
    )
    p.add_argument(
        "--interpose",
        action="append",
        default=[],
        metavar="PATH",
        help="take over the live back-end socket at PATH (moved to PATH.vuinspect-orig "
        "while running, put back on exit); repeatable",
    )
    p.add_argument(
        "--frontend",
        choices=FRONTEND_CHOICES,
        default="auto",
        help="which peer is QEMU: the one that connects to --listen, the one at "
        "--connect, or auto (whoever speaks first; default)",
    )
    p.add_argument(
        "--connect-timeout",
        type=connect_timeout,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help="how long an accepted connection waits for a missing --connect target "
        f"before it is closed (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    p.add_argument("--device", choices=DEVICE_TYPES, help="device type, for naming feature bits")
    p.add_argument(
        "--socket-mode",
        type=_mode,
        default=0o600,
        metavar="MODE",
        help="permissions of new listen sockets (octal, default 0600); "
        "--interpose keeps the mode and owner of the socket it takes over",
    )
    cap = p.add_argument_group("capture")
    cap.add_argument(
        "-w",
        "--write",
        metavar="FILE",
        help="write a pcapng capture (- for stdout, e.g. into wireshark -k -i -); "
        "an existing non-empty file is refused unless --force",
    )
    cap.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing -w file (made 0600: it holds guest data); "
        "a file with other hard links is never written",
    )
    cap.add_argument(
        "-b",
        "--ring-buffer",
        action="append",
        default=[],
        metavar="KEY:N",
        help="ring buffer, as dumpcap: filesize:KB or duration:S starts a new file "
        "(NAME_00001_DATE.pcapng ...); files:N keeps only the last N",
    )
    cap.add_argument(
        "-a",
        "--autostop",
        action="append",
        default=[],
        metavar="KEY:N",
        help="end the capture (forwarding goes on) after duration:S, filesize:KB or files:N",
    )
    cap.add_argument(
        "-c",
        "--count",
        type=int,
        metavar="N",
        help="end the capture after N messages (forwarding goes on)",
    )
    cap.add_argument(
        "--capture-filter",
        metavar="FILTER",
        help="record only the messages matching FILTER (the language of "
        "read --filter); the others are forwarded, not recorded",
    )
    cap.add_argument(
        "--capture-buffer",
        type=_size,
        default=None,
        metavar="SIZE",
        help="memory for capture data not yet written (default 32M); beyond it "
        "messages are left out of the capture and counted",
    )
    dp = p.add_argument_group("data plane (the vrings in guest memory)")
    dp.add_argument(
        "--rings",
        type=rings_interval,
        default=None,
        metavar="off|on|INTERVAL",
        help="sample each started vring from guest memory every INTERVAL (e.g. "
        "100ms, 0.5s; on = 100ms) and at its control messages, as ring frames "
        "(only when something changed); default on whenever a capture or the "
        "TUI is on",
    )
    dp.add_argument(
        "--trace-notify",
        action="store_true",
        help="relay kicks, calls and errs through eventfds of the proxy and record "
        "their counts (notify frames, per vring per 10 ms); adds a hop to every "
        "notification; needs --rings",
    )
    rules = p.add_argument_group("rules (change what passes; docs/rules.md)")
    rules.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help="e.g. 'delay 2s: name == GET_VRING_BASE', 'drop once: FILTER', "
        "'reply-error: name == GET_CONFIG', 'disconnect: FILTER', "
        "'corrupt 0=0xff: FILTER', 'mask-features VIRTIO_RING_F_EVENT_IDX'; "
        "repeatable",
    )
    rules.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="FILE",
        help="rules from FILE, one a line (# comments)",
    )
    rules.add_argument(
        "--script",
        action="append",
        default=[],
        metavar="FILE",
        help="a Python addon file with hooks message(flow, msg), "
        "connection_open(flow), connection_close(flow) (docs/rules.md, "
        "examples/); repeatable",
    )
    p.add_argument(
        "--no-tui",
        action="store_true",
        help="print one summary line per message instead of the TUI",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show no messages; print only the 'listening on' line and errors",
    )
    # For benchmarks: the TUI's full cost, without a terminal.
    p.add_argument("--tui-headless", action="store_true", help=argparse.SUPPRESS)
    # Internal: run as the viewer child of the forwarding process, reading this fd (proxy_viewer.py).
    p.add_argument("--view-fd", type=int, help=argparse.SUPPRESS)
    # Internal: the TUI viewer's control socket to the engine (the intercept, holds.py).
    p.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)


def check_connect_path(path: str) -> None:
    """Refuse at start what no connection could ever reach (a missing path is fine:
    the back-end may not be up yet, and each connection reports it)."""
    if not path:
        raise CliError("--connect needs a socket path (got an empty one)")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise CliError(
            f"--connect {path}: too long for a Unix socket path "
            f"({len(os.fsencode(path))} bytes, at most {MAX_UNIX_PATH})"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CliError(f"--connect {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CliError(f"--connect {path} is not a socket")


def routes_from_args(args: argparse.Namespace) -> list[Route]:
    if any(not lp for lp in [*args.listen, *args.interpose]):
        raise CliError("--listen and --interpose need a socket path (got an empty one)")
    if len(args.listen) != len(args.connect):
        raise CliError(
            "--listen and --connect must come in pairs "
            f"(got {len(args.listen)} --listen, {len(args.connect)} --connect)"
        )
    for cp in args.connect:
        check_connect_path(cp)
    routes = [
        Route(
            listen=lp,
            connect=cp,
            frontend=args.frontend,
            device=args.device,
            connect_timeout=args.connect_timeout,
        )
        for lp, cp in zip(args.listen, args.connect, strict=True)
    ]
    routes += [
        Route.interposed(
            path, frontend=args.frontend, device=args.device, connect_timeout=args.connect_timeout
        )
        for path in args.interpose
    ]
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


def _want_tui(args: argparse.Namespace) -> bool:
    """The TUI is the default on a terminal; plain lines otherwise (or when asked)."""
    if args.no_tui or args.quiet or args.write == "-":
        return False
    if not (getattr(args, "tui_headless", False) or on_terminal()):
        return False
    try:
        import vuinspect.tui.app  # noqa: F401
    except ImportError:
        return False
    return True


def check_capture_args(args: argparse.Namespace) -> None:
    """Everything about -w and its limits that can be refused before any socket exists
    (the file itself is opened only once listening worked, proxy_engine.py)."""
    try:
        args.limits = capfile.limits_from(args.ring_buffer, args.autostop, args.count)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.limits.active and not args.write:
        raise CliError("-b, -a and -c limit the -w capture: give -w FILE")
    if getattr(args, "trace_notify", False) and getattr(args, "rings", None) == 0:
        raise CliError("--trace-notify records through the ring sampler: not with --rings off")
    if args.limits.active and (args.write == "-" or capfile.is_fifo(args.write)):
        raise CliError("-b, -a and -c need -w FILE (a regular file), not a pipe")
    if args.capture_filter:
        from vuinspect.filter import FilterError, compile_filter

        try:  # the engine takes it compiled: checked and compiled once
            args.capture_filter = compile_filter(args.capture_filter)
        except FilterError as exc:
            raise CliError(f"--capture-filter: {exc}") from None
    if args.write and args.write != "-" and not args.limits.ring:  # (a ring writes NAME_n_DATE)
        try:
            capfile.check_target(args.write, args.force)
        except CaptureError as exc:
            raise CliError(str(getattr(exc, "reason", exc))) from None


def load_rules(args: argparse.Namespace) -> object:
    """--rule/--rules parsed at start: a syntax error is one line naming the position."""
    scripts = getattr(args, "script", None) or []
    if not getattr(args, "rule", None) and not getattr(args, "rules", None) and not scripts:
        return None
    from vuinspect.addons import AddonError, load_scripts
    from vuinspect.rules import RuleError, RuleSet, parse_rules

    try:
        addons = load_scripts(scripts)
        report = (lambda text: None) if _want_tui(args) else None  # (not over the TUI)
        return RuleSet(
            parse_rules(args.rule, args.rules), device=args.device, addons=addons, report=report
        )
    except AddonError as exc:
        raise CliError(str(exc)) from None
    except RuleError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"--rules {exc.filename}: {exc.strerror}") from None


def _check_view_fd(fd: int) -> None:
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise CliError(f"--view-fd {fd}: not a pipe (it is internal to the proxy)")
    except (OSError, OverflowError):
        raise CliError(
            f"--view-fd {fd}: not an open file descriptor (it is internal to the proxy)"
        ) from None


def run(args: argparse.Namespace) -> int:
    routes = routes_from_args(args)
    if args.view_fd is not None:  # the viewer child of an engine (see proxy_viewer.py)
        _check_view_fd(args.view_fd)
        from .proxy_viewer import run_view

        return run_view(args, routes, args.view_fd, tui=not args.no_tui)
    check_capture_args(args)
    args.ruleset = load_rules(args)
    if args.quiet:
        return run_engine(args, routes)  # nothing to decode or show
    return run_engine(args, routes, "tui" if _want_tui(args) else "lines")
