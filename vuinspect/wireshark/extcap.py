"""Wireshark extcap interface "vhost-user proxy": start a proxied live capture from Wireshark.

Wireshark runs the installed launcher with ``--extcap-interfaces``,
``--extcap-config``, ``--extcap-dlts`` and finally ``--capture --fifo PATH``
plus the user's options (``--listen``, ``--connect``, ``--frontend``,
``--device``, ``--rings``, ``--trace-notify``, ``--rule``, ``--rules``,
``--script``, ``--capture-buffer``: those of ``vuinspect proxy`` that are not
Wireshark's own capture options).  The
capture runs the proxy's own engine (proxy/engine.py, as ``vuinspect proxy -q
-w FIFO``): our pcapng (link type 252, exported PDU naming the "vhost_user"
dissector) goes into the FIFO every few ms, so packets show up live, with the
same rules, ring sampler, capture budget and stop as the proxy command.
Wireshark's capture filter field takes a ``vuinspect read --filter`` expression
(``--extcap-capture-filter``).  Wireshark stops it with SIGTERM (or by closing the
FIFO); the proxy then closes its sockets and the capture within ~2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING

from vuinspect import __version__
from vuinspect.capture import CaptureError
from vuinspect.capture.capfile import parse_size
from vuinspect.capture.pcapng import LINKTYPE_WIRESHARK_UPPER_PDU
from vuinspect.errors import error_line
from vuinspect.protocol.features import DEVICE_TYPES

if TYPE_CHECKING:
    from vuinspect.filter import Predicate
    from vuinspect.rules import RuleSet

INTERFACE = "vhostuser"
DISPLAY = "vhost-user proxy (vuinspect)"
#: The dialog's check of the capture buffer field (Wireshark's regex syntax): what
#: capfile.parse_size reads, or nothing (a test keeps the two in step).
SIZE_VALIDATION = "^ *([0-9]+ *[kKmMgG]?[iI]?[bB]? *)?$"


def interfaces_text() -> str:
    return (
        f"extcap {{version={__version__}}}{{display=vuinspect}}\n"
        f"interface {{value={INTERFACE}}}{{display={DISPLAY}}}\n"
    )


def dlts_text() -> str:
    return (
        f"dlt {{number={LINKTYPE_WIRESHARK_UPPER_PDU}}}{{name=WIRESHARK_UPPER_PDU}}"
        "{display=vhost-user messages (exported PDU)}\n"
    )


def config_text() -> str:
    lines = [
        "arg {number=0}{call=--listen}{display=Listen socket}{type=string}{required=true}"
        "{tooltip=Socket path the proxy creates; point QEMU (or the back-end) at it}",
        "arg {number=1}{call=--connect}{display=Connect socket}{type=string}{required=true}"
        "{tooltip=Socket path of the real back-end (or of QEMU in server mode)}",
        "arg {number=2}{call=--frontend}{display=Front-end side}{type=selector}"
        "{tooltip=Which peer is QEMU; auto: the one that speaks first}",
        "value {arg=2}{value=auto}{display=auto (first to speak)}{default=true}",
        "value {arg=2}{value=listen}{display=QEMU connects to the listen socket}{default=false}",
        "value {arg=2}{value=connect}{display=QEMU listens on the connect socket}{default=false}",
        "arg {number=3}{call=--device}{display=Device type}{type=selector}"
        "{tooltip=virtio device type, for feature bit names (guessed when not given)}",
        "value {arg=3}{value=auto}{display=guess from the features}{default=true}",
    ]
    lines += [f"value {{arg=3}}{{value={d}}}{{display={d}}}{{default=false}}" for d in DEVICE_TYPES]
    lines += [
        # The engine's own options, as `vuinspect proxy` has them (docs/rules.md, issue 13).
        "arg {number=4}{call=--rings}{display=Ring sampler}{type=selector}"
        "{tooltip=Sample each started vring from guest memory every 100 ms, as ring frames}",
        "value {arg=4}{value=on}{display=on}{default=true}",
        "value {arg=4}{value=off}{display=off}{default=false}",
        "arg {number=5}{call=--trace-notify}{display=Trace notifications}{type=boolflag}"
        "{tooltip=Relay kicks, calls and errs through the proxy and record their counts"
        " (recorded by the ring sampler: needs it on)}",
        "arg {number=6}{call=--rule}{display=Rule}{type=string}"
        "{tooltip=One rule as vuinspect proxy --rule, e.g. 'delay 2s: name == GET_VRING_BASE'}",
        "arg {number=7}{call=--rules}{display=Rules file}{type=fileselect}{mustexist=true}"
        "{tooltip=Rules, one a line, as vuinspect proxy --rules FILE}",
        "arg {number=8}{call=--script}{display=Addon script}{type=fileselect}{mustexist=true}"
        "{tooltip=A Python addon file with hooks message(flow, msg), connection_open(flow),"
        " connection_close(flow), as vuinspect proxy --script FILE}",
        "arg {number=9}{call=--capture-buffer}{display=Capture buffer}{type=string}"
        f"{{validation={SIZE_VALIDATION}}}"
        "{tooltip=Memory for capture data not yet written, e.g. 64M (default 32M);"
        " beyond it messages are left out of the capture and counted}",
    ]
    return "\n".join(lines) + "\n"


DESCRIPTION = """\
The 'vhost-user proxy' capture interface of Wireshark.  Wireshark runs this
command itself; install it with 'vuinspect install-dissector --extcap'.

In Wireshark, open the options of the 'vhost-user proxy (vuinspect)' interface,
give the listen and connect sockets (as for 'vuinspect proxy'; also the front-end
side, device type, ring sampler, rules), and start: the proxy runs as
'vuinspect proxy -w' does, and its messages show up live.  Wireshark's capture
filter field takes a 'vuinspect read --filter' expression.  Stopping the capture
closes the proxy's sockets within about 2 seconds.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION  # (the module docstring is for developers)
    parser.add_argument("--extcap-interfaces", action="store_true")
    parser.add_argument("--extcap-version")
    parser.add_argument("--extcap-interface")
    parser.add_argument("--extcap-dlts", action="store_true")
    parser.add_argument("--extcap-config", action="store_true")
    parser.add_argument("--extcap-reload-option")
    parser.add_argument("--extcap-capture-filter")
    parser.add_argument("--extcap-control-in")
    parser.add_argument("--extcap-control-out")
    parser.add_argument("--extcap-cleanup-postkill", action="store_true")
    parser.add_argument("--capture", action="store_true")
    parser.add_argument("--fifo")
    parser.add_argument("--listen")
    parser.add_argument("--connect")
    parser.add_argument("--frontend", default="auto", choices=("auto", "listen", "connect"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rings", default="on", choices=("on", "off"))
    parser.add_argument("--trace-notify", action="store_true")
    parser.add_argument("--rule", action="append", default=[])
    parser.add_argument("--rules", action="append", default=[])
    parser.add_argument("--script", action="append", default=[])
    parser.add_argument("--capture-buffer")


class Refused(Exception):
    """Why the dialog's options cannot run together, in the dialog's words."""


def engine_args(args: argparse.Namespace) -> argparse.Namespace:
    """The extcap's options as the ``vuinspect proxy`` options the engine reads.

    One pass checks and converts: what cannot run raises :class:`Refused` before
    anything starts (Wireshark shows it as the capture's error), and each value is
    read once.  Wireshark's FIFO is ``-w`` (created by Wireshark: written as it is,
    never truncated, capfile.open_target), the capture filter field is
    ``--capture-filter``; ring buffers, autostop and packet counts are Wireshark's
    own capture options.
    """
    if not args.listen or not args.connect:
        raise Refused("set both the listen and the connect socket paths")
    try:
        match = _compiled(args.extcap_capture_filter)
    except Refused as exc:
        raise Refused(f"capture filter: {exc}") from None
    if args.trace_notify and args.rings == "off":
        raise Refused(
            "Trace notifications are recorded by the ring sampler: "
            "set Ring sampler to on, or turn Trace notifications off"
        )
    buffer = (args.capture_buffer or "").strip()
    try:
        capture_buffer = parse_size(buffer) if buffer else None
    except ValueError as exc:
        raise Refused(f"Capture buffer: {exc}") from None
    return argparse.Namespace(
        write=args.fifo,
        force=True,  # (Wireshark made the FIFO for us)
        capture_buffer=capture_buffer,
        limits=None,
        capture_filter=match,  # (compiled: the recorder takes it as it is)
        device=None if args.device in (None, "", "auto") else args.device,
        rings=0.0 if args.rings == "off" else None,  # (None: the engine's default, 100 ms)
        trace_notify=args.trace_notify,
        ruleset=None,
        socket_mode=0o600,
        quiet=True,
    )


def capture(args: argparse.Namespace) -> int:
    """Run the proxy's engine (proxy/engine.py), writing the capture into Wireshark's FIFO.

    The same engine as ``vuinspect proxy -q -w FIFO``: the same bounded capture
    memory, ring sampler, stop within ~2 s on SIGTERM (Wireshark's stop).  The run
    also ends when Wireshark stops reading (the FIFO breaks).  Nothing is printed
    unless something fails: Wireshark shows an extcap's stderr as an error.
    """
    from vuinspect.addons import AddonError
    from vuinspect.errors import CliError
    from vuinspect.proxy.engine import Engine
    from vuinspect.proxy.server import Route
    from vuinspect.rules import RuleError

    if not args.fifo:
        print("vuinspect extcap: --capture needs --fifo", file=sys.stderr)
        return 2
    try:
        options = engine_args(args)
    except Refused as exc:
        return _refuse(args.fifo, str(exc), 2)
    try:
        options.ruleset = _ruleset(args, options.device)
    except (RuleError, AddonError, OSError) as exc:
        return _refuse(args.fifo, str(exc), 2)
    route = Route(
        listen=args.listen, connect=args.connect, frontend=args.frontend, device=options.device
    )
    try:
        engine = Engine(options, [route], out=lambda _text: None, stop_on_capture_error=True)
        engine.server.on_error = _say
        engine.run()
    except (CliError, CaptureError, OSError, ValueError) as exc:
        return _refuse(args.fifo, str(exc), 1)
    return 0


def _ruleset(args: argparse.Namespace, device: str | None) -> RuleSet | None:
    """--rule/--rules/--script as the proxy loads them (empty strings from the dialog
    skipped); an addon's report goes to stderr, which Wireshark shows."""
    texts = [t for t in args.rule if t.strip()]
    files = [f for f in args.rules if f.strip()]
    scripts = [f for f in args.script if f.strip()]
    if not texts and not files and not scripts:
        return None
    from vuinspect.addons import load_scripts
    from vuinspect.rules import RuleSet, parse_rules

    return RuleSet(parse_rules(texts, files), device=device, addons=load_scripts(scripts))


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(error_line("extcap", text), file=sys.stderr, flush=True)


def _refuse(fifo: str, text: str, code: int) -> int:
    """Say why the capture cannot run (Wireshark shows it) and let dumpcap see the end."""
    _say(text)
    _release(fifo)
    return code


def _release(fifo: str) -> None:
    """Refusing to start: open and close the FIFO, so a dumpcap waiting to read it sees the
    end (and our message) instead of waiting for ever."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))


def _compiled(text: str | None) -> Predicate | None:
    """The capture filter compiled (None if there is none); Refused says why it cannot be."""
    if not text or not text.strip():
        return None
    from vuinspect import filter as flt

    try:
        return flt.compile_filter(text)
    except flt.FilterError as exc:
        raise Refused(str(exc)) from None


def filter_problem(text: str | None) -> str | None:
    """Why a capture filter is not valid (None if it is, or if there is none)."""
    try:
        _compiled(text)
    except Refused as exc:
        return str(exc)
    return None


def dispatch(args: argparse.Namespace) -> int:
    if args.extcap_interfaces:
        sys.stdout.write(interfaces_text())
        return 0
    if args.extcap_interface and args.extcap_interface != INTERFACE:
        _say(f"unknown interface {args.extcap_interface!r}")
        return 2
    if args.extcap_dlts:
        sys.stdout.write(dlts_text())
        return 0
    if args.extcap_config:
        if not args.extcap_reload_option:
            sys.stdout.write(config_text())
        return 0
    if args.capture:
        return capture(args)
    if args.extcap_capture_filter is not None:
        # Wireshark validates the capture filter field: exit 0 if valid, else say why.
        problem = filter_problem(args.extcap_capture_filter)
        if problem is not None:
            sys.stdout.write(problem + "\n")
            return 1
        return 0
    print(
        "vuinspect extcap: run by Wireshark; see `vuinspect install-dissector --extcap`",
        file=sys.stderr,
    )
    return 2


def run(args: argparse.Namespace) -> int:
    return dispatch(args)


def main(argv: list[str] | None = None) -> int:
    """Entry of the installed launcher: tolerant of extcap options newer Wiresharks add."""
    parser = argparse.ArgumentParser(prog="vuinspect-extcap", description=__doc__.splitlines()[0])
    configure(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _say(f"ignoring {' '.join(unknown)}")
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
