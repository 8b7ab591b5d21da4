"""Read a capture: one line per message, NDJSON, or statistics.

    vuinspect read capture.pcapng
    vuinspect read --json capture.pcapng | jq .
    vuinspect read --filter 'name == SET_MEM_TABLE and conn == 2' capture.pcapng
    vuinspect read --stats capture.pcapng
    vuinspect proxy ... -w - | vuinspect read -
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque

from .cli import CliError
from .filter import FilterError, compile_filter
from .message import Message
from .pipeline import Pipeline
from .protocol.features import DEVICE_TYPES
from .render import summary_line, to_json
from .stats import connection_table, format_stats, request_table


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", help="capture file (pcapng written by vuinspect), or - for stdin")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per message (NDJSON); with --stats, the statistics as JSON")
    p.add_argument("--stats", action="store_true",
                   help="counts and reply latency per request and connection")
    p.add_argument("-f", "--filter", default="", metavar="EXPR",
                   help="show only messages matching EXPR (see 'Filter language' in the README)")
    p.add_argument("--device", choices=DEVICE_TYPES,
                   help="device type for naming virtio feature bits (default: from the capture)")
    p.add_argument("-r", "--relative", action="store_true",
                   help="times relative to the first frame")


def run(args: argparse.Namespace) -> int:
    from .capture import CaptureError, CaptureFormatError, CaptureReader

    try:
        predicate = compile_filter(args.filter)
    except FilterError as exc:
        raise CliError(f"bad filter: {exc}") from None
    source = sys.stdin.buffer if args.file == "-" else args.file
    if source is not sys.stdin.buffer and not os.path.exists(source):
        raise CliError(f"{source}: no such file")
    if source is not sys.stdin.buffer and os.path.isdir(source):
        raise CliError(f"{source}: is a directory")
    try:
        reader = CaptureReader(source)
    except CaptureFormatError as exc:
        raise CliError(f"{args.file}: not a vuinspect capture: {exc.reason}") from None
    except CaptureError as exc:
        raise CliError(f"{args.file}: {exc.reason}") from None

    pipeline = Pipeline(device=args.device)
    out = sys.stdout
    write = out.write
    base: int | None = None
    held: deque[Message] = deque()  # requests held back until their reply links them

    def emit(msg: Message) -> None:
        nonlocal base
        if not predicate(msg):
            return
        if args.json:
            write(json.dumps(to_json(msg), separators=(",", ":")) + "\n")
        else:
            if args.relative and base is None:
                base = msg.ts_ns
            write(summary_line(msg, base) + "\n")

    try:
        for msg in pipeline.run(reader):
            if args.stats:
                continue
            held.append(msg)
            while held and not _awaits_reply(pipeline, held[0]):
                emit(held.popleft())
        while held:
            emit(held.popleft())
    except CaptureFormatError as exc:
        raise CliError(f"{args.file}: not a vuinspect capture: {exc.reason}") from None
    sessions = list(pipeline.sessions.values())
    while held:
        emit(held.popleft())
    if args.stats:
        if args.json:
            json.dump({"requests": request_table(sessions),
                       "connections": connection_table(sessions)}, out, indent=1)
            write("\n")
        else:
            write(format_stats(sessions) + "\n")
    out.flush()
    if reader.error is not None:
        where = f" at byte {reader.error.offset}" if reader.error.offset is not None else ""
        print(f"vuinspect read: {args.file}: capture damaged{where}: {reader.error.reason}; "
              f"{reader.frames_read} whole frames before it were read", file=sys.stderr)
        return 2
    return 0


def _awaits_reply(pipeline: Pipeline, msg: Message) -> bool:
    """Is ``msg`` a request whose reply has not been seen yet (so ``reply_in`` may change)?"""
    if msg.reply or msg.kind != "message":
        return False
    session = pipeline.sessions.get(msg.conn)
    return session is not None and any(p.message is msg for p in session.pending[msg.channel])
