"""Wireshark extcap interface "vhost-user proxy": start a proxied live capture from Wireshark.

Wireshark runs the installed launcher with ``--extcap-interfaces``,
``--extcap-config``, ``--extcap-dlts`` and finally ``--capture --fifo PATH``
plus the user's options (``--listen``, ``--connect``, ``--frontend``,
``--device``).  The capture runs the real proxy and writes our pcapng (link
type 252, exported PDU naming the "vhost_user" dissector) into the FIFO
every few ms, so packets show up live.  Wireshark's capture filter field
takes a ``vuinspect read --filter`` expression (``--extcap-capture-filter``).
Wireshark stops it with SIGTERM; the proxy then closes its sockets and the capture.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from vuinspect import __version__
from vuinspect.capture.pcapng import LINKTYPE_WIRESHARK_UPPER_PDU
from vuinspect.protocol.features import DEVICE_TYPES

INTERFACE = "vhostuser"
DISPLAY = "vhost-user proxy (vuinspect)"


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
    return "\n".join(lines) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
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


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def capture(args: argparse.Namespace) -> int:
    """Run the proxy, writing the capture into Wireshark's FIFO until SIGTERM.

    The capture goes through the proxy's own Recorder: the same bounded
    memory, the same capture filter (Wireshark's capture filter field, in the
    language of ``vuinspect read --filter``), the same stop within ~2 s.  Ring
    buffers, autostop and packet counts are Wireshark's own capture options.
    """
    from vuinspect.capture import CaptureError
    from vuinspect.proxy.recorder import Recorder
    from vuinspect.proxy.server import ListenError, ProxyServer, Route

    if not args.fifo:
        print("vuinspect extcap: --capture needs --fifo", file=sys.stderr)
        return 2
    if not args.listen or not args.connect:
        print("vuinspect extcap: set both the listen and the connect socket paths", file=sys.stderr)
        _release(args.fifo)
        return 2
    if (problem := filter_problem(args.extcap_capture_filter)) is not None:
        print(f"vuinspect extcap: capture filter: {problem}", file=sys.stderr)
        _release(args.fifo)
        return 2
    device = None if args.device in (None, "", "auto") else args.device
    route = Route(listen=args.listen, connect=args.connect, frontend=args.frontend, device=device)
    done = threading.Event()

    def failed(_text: str) -> None:  # Wireshark went away (the FIFO broke): stop
        done.set()

    recorder = Recorder(
        args.fifo,
        on_error=failed,
        on_warning=lambda _text: None,
        capture_filter=args.extcap_capture_filter,
        device=device,
        force=True,
        defer=True,
    )  # (a FIFO Wireshark has not opened yet is waited for)
    server = ProxyServer([route], None, recorder=recorder)
    server.on_error = lambda text: print(f"vuinspect extcap: {text}", file=sys.stderr, flush=True)
    old = {
        sig: signal.signal(sig, _raise_stop)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        try:
            server.start()
            recorder.open()
            recorder.start()
        except (ListenError, CaptureError, OSError, ValueError) as exc:
            print(f"vuinspect extcap: {exc}", file=sys.stderr)
            _release(args.fifo)
            return 1
        while not done.wait(0.25) and not server.wait(0):
            pass
    except _Stop:
        pass
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        with contextlib.suppress(OSError, ValueError):
            recorder.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 0


def _release(fifo: str) -> None:
    """Refusing to start: open and close the FIFO, so a dumpcap waiting to read it sees the
    end (and our message) instead of waiting for ever."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))


def filter_problem(text: str | None) -> str | None:
    """Why a capture filter is not valid (None if it is, or if there is none)."""
    if not text or not text.strip():
        return None
    from vuinspect.filter import FilterError, compile_filter

    try:
        compile_filter(text)
    except FilterError as exc:
        return str(exc)
    return None


def dispatch(args: argparse.Namespace) -> int:
    if args.extcap_interfaces:
        sys.stdout.write(interfaces_text())
        return 0
    if args.extcap_interface and args.extcap_interface != INTERFACE:
        print(f"vuinspect extcap: unknown interface {args.extcap_interface!r}", file=sys.stderr)
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
        print(f"vuinspect extcap: ignoring {' '.join(unknown)}", file=sys.stderr)
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
