"""Replay the recorded front-end side of one connection against a live back-end.

    vuinspect replay captures/blk.pcapng --connect /run/qsd.sock
    vuinspect replay cap.pcapng --connect be.sock --conn 2 -w replay.pcapng --ignore 'GET_VRING_BASE:payload.*'
    vuinspect replay captures/blk.pcapng --listen /tmp/be.sock --as-backend   # the other role

vuinspect acts as the front-end: it sends every recorded front-end message in
order, with fds made anew from the recorded kinds and sizes (memfds sized from
the recorded region table so the back-end can map them, eventfds for
kick/call/err, a socket pair for the back-end channel, on which the recorded
answers are given), and waits for each reply the recording had (--timeout per
reply).  The back-end's answers are compared with the recorded ones as
'vuinspect diff' does (A is the recording, B the replay); exit 0 when it
behaved as recorded, 1 otherwise.
Guest memory contents are not in a capture: the rings the back-end sees are
empty, so values that depend on guest I/O (GET_VRING_BASE after I/O) differ.
With --as-backend the roles swap: vuinspect answers a live front-end (QEMU,
DPDK virtio-user) with the recorded back-end side, on --listen SOCK (or
--connect SOCK when the front-end listens); the same report, B being the live
front-end's session.
"""

from __future__ import annotations

import argparse

from ..capture import CaptureError, CaptureWriter
from ..errors import CliError
from .backend import AsBackend
from .compare import compare
from .diff import add_report_options, print_report
from .load import decode, read_frames
from .replay import Replay, pick_connection


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("capture", help="capture holding the session to replay")
    p.add_argument(
        "--connect",
        metavar="SOCK",
        help="Unix socket of the live back-end (or, with --as-backend, of a "
        "front-end that listens)",
    )
    p.add_argument(
        "--listen",
        metavar="SOCK",
        help="with --as-backend: the Unix socket the live front-end connects to",
    )
    p.add_argument(
        "--as-backend",
        action="store_true",
        help="be the back-end: answer a live front-end with the recorded replies",
    )
    p.add_argument(
        "--conn",
        type=int,
        metavar="N",
        help="connection of the capture to replay (default: the first)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to wait for each recorded reply, or with --as-backend for "
        "the front-end's next message (default 5)",
    )
    p.add_argument(
        "--accept-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="with --as-backend: seconds to wait for the front-end's connection (default 60)",
    )
    p.add_argument("-w", "--write", metavar="OUT.pcapng", help="write the replay as a capture")
    add_report_options(p)


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0 or args.accept_timeout <= 0:
        raise CliError("--timeout and --accept-timeout must be positive")
    if bool(args.connect) == bool(args.listen) or (args.listen and not args.as_backend):
        raise CliError("give either --connect SOCK or --listen SOCK --as-backend")
    recorded = pick_connection(decode(read_frames(args.capture)), args.conn)
    opened = next((m.info for m in recorded if m.kind == "open"), {})
    writer = None
    if args.write:  # opened first: a bad path fails before a peer is touched
        try:
            writer = CaptureWriter(args.write)
        except CaptureError as exc:
            raise CliError(exc.reason) from None
    if args.as_backend:
        replay: AsBackend | Replay = AsBackend(
            recorded,
            args.listen or args.connect,
            args.timeout,
            args.accept_timeout,
            connect=bool(args.connect),
        )
    else:
        replay = Replay(recorded, args.connect, args.timeout)
    try:
        frames = replay.run(opened)
        if writer is not None:
            for f in frames:
                writer.write(f)
    finally:
        if writer is not None:
            try:
                writer.close()
            except (CaptureError, OSError) as exc:
                raise CliError(f"cannot write {args.write}: {exc}") from None
    report = compare(recorded, decode(frames), args.ignore)
    report.notes = replay.notes
    return print_report(report, args)
