"""Print, filter or summarise captures, one line per message (like tshark -r).

examples:
  vuinspect read captures/blk.pcapng
  vuinspect read -r captures/blk.pcapng -f 'name == SET_MEM_TABLE and conn == 1'
  vuinspect read --json captures/net.pcapng | jq .
  vuinspect read -T fields -e frame -e name -e latency_us captures/blk.pcapng
  vuinspect read --stats -f 'channel == main' captures/fs.pcapng
  vuinspect read -t r -c 20 captures/blk.pcapng
  vuinspect read captures/blk.pcapng captures/net.pcapng    # read in sequence
  vuinspect read --rings --detail cap.pcapng    # the data plane: vring samples, kicks/calls
  vuinspect proxy ... -w - | vuinspect read -

Exit status: 0 on success, 2 for a bad filter or a damaged capture, 1 for other errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .api import Concat, is_pcapng, linked
from .capture.errors import capture_error, check_path, damage_text
from .dataplane.text import in_message_list
from .errors import CliError, error_line
from .filter import FilterError, compile_filter, field_hint, field_value
from .frames import DATAPLANE_KINDS
from .hints import NO_RINGS
from .lines import TIME_FORMATS, text_line
from .message import Message
from .pipeline import Pipeline
from .protocol.features import DEVICE_TYPES
from .render import safe_text, to_json
from .stats import connection_table, format_stats, request_table, ring_table, tally

#: smaller files read too fast to need a bar (the environment variable is for tests)
PROGRESS_MIN_BYTES = int(os.environ.get("VUINSPECT_PROGRESS_MIN", 4 << 20))


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="capture files (pcapng written by vuinspect), read in sequence; - for stdin",
    )
    p.add_argument(
        "-r",
        "--read-file",
        dest="rfiles",
        action="append",
        default=[],
        metavar="FILE",
        help="a capture file to read (as tshark -r); may repeat",
    )
    p.add_argument(
        "-f",
        "-Y",
        "--filter",
        default="",
        metavar="EXPR",
        help="show only messages matching EXPR ('vuinspect fields' lists the names; "
        "-Y as in tshark)",
    )
    p.add_argument(
        "-c", "--count", type=_positive, metavar="N", help="stop after N (matching) messages"
    )
    p.add_argument(
        "-t",
        dest="time_format",
        choices=TIME_FORMATS,
        default="e",
        help="time format: ad = UTC date and time, a = UTC time of day, "
        "r = relative to the first message, d = since the previous line, "
        "e = seconds since the epoch (default)",
    )
    p.add_argument(
        "--relative", dest="time_format", action="store_const", const="r", help=argparse.SUPPRESS
    )  # before -t r existed
    p.add_argument(
        "-T",
        dest="output",
        choices=("text", "json", "fields"),
        default=None,
        help="output: text lines (default), json (NDJSON, as --json), or fields "
        "(the -e fields, tab separated)",
    )
    p.add_argument(
        "-e",
        dest="fields",
        action="append",
        default=[],
        metavar="FIELD",
        help="a field for -T fields (a filter name: frame, name, payload.num, ...); may repeat",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per message (NDJSON); with --stats, the statistics as JSON",
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="counts and reply latency per request and connection (of the messages --filter keeps)",
    )
    p.add_argument(
        "--rings",
        action="store_true",
        help="the ring timeline: only the data plane's ring samples and notify "
        "counts (without --rings they are left out, except those that raise "
        "or resolve a problem)",
    )
    p.add_argument(
        "--detail",
        action="store_true",
        help="with --rings: the in-flight descriptor chains and request headers the samples hold",
    )
    p.add_argument(
        "--device",
        choices=DEVICE_TYPES,
        help="device type for naming virtio feature bits (default: from the capture)",
    )


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return n


def _shown(rings: bool) -> Callable[[Message], bool]:
    """--rings: only ring/notify messages; otherwise everything but routine samples."""
    if rings:
        return lambda m: m.kind in DATAPLANE_KINDS
    return in_message_list


def strict_json(value: Any, indent: int | None = None) -> str:
    """JSON a strict reader takes: a NaN or infinite float (none should reach here; the
    capture's own are refused by ``frames.event_info``) is written as null."""
    seps = (",", ": ") if indent is not None else (",", ":")
    try:
        return json.dumps(value, separators=seps, indent=indent, allow_nan=False)
    except ValueError:  # (the slow path, only for such a value)
        value = json.loads(json.dumps(value), parse_constant=lambda _: None)
        return json.dumps(value, separators=seps, indent=indent, allow_nan=False)


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(_field_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):  # a backslash doubled: the escapes stay unambiguous
        return safe_text(value.replace("\\", "\\\\"))
    return str(value)


def _fields_line(names: list[str]) -> Callable[[Message], str]:
    from .fields import WIRESHARK_PREFIX, canonical, payload_types

    paths = []
    for name in names:
        name = name.removeprefix(WIRESHARK_PREFIX)  # -e vhost_user.name works too
        if name.startswith("payload.") and payload_types(name[8:]) is not None:
            paths.append(name)
        elif canonical(name) is not None:
            paths.append(canonical(name) or name)
        else:
            raise CliError(
                f"unknown field {name!r} for -e{field_hint(name)} ('vuinspect fields' lists them)",
                2,
            )

    def line(msg: Message) -> str:
        return "\t".join(_field_text(field_value(msg, path)) for path in paths)

    return line


def _sources(args: argparse.Namespace) -> list[str]:
    files = [*args.rfiles, *args.files]
    if not files:
        raise CliError("no capture file: give one (or -r FILE; - reads stdin)", 2)
    if files.count("-") > 1:
        raise CliError("stdin (-) can be read only once", 2)
    for f in files:
        if f != "-":
            check_path(f)
    return files


class _Progress:
    """A one-line bar on stderr while a large file is read with nothing else on screen."""

    WIDTH = 30

    def __init__(self, name: str, total: int, position: Callable[[], int]) -> None:
        self.name = os.path.basename(name)
        self.total = total
        self.position = position
        self.shown = -1

    def update(self) -> None:
        try:
            done = self.position()
        except (OSError, ValueError):
            return
        pct = min(100, done * 100 // max(1, self.total))
        if pct == self.shown:
            return
        self.shown = pct
        fill = pct * self.WIDTH // 100
        sys.stderr.write(f"\r{self.name} [{'#' * fill}{'.' * (self.WIDTH - fill)}] {pct:3d}%")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown >= 0:
            sys.stderr.write("\r" + " " * (len(self.name) + self.WIDTH + 8) + "\r")
            sys.stderr.flush()


def _want_progress(path: str, stats: bool, size: int) -> bool:
    """Only when stderr is a terminal that would otherwise sit idle: --stats, or stdout
    redirected to a file (a pipe to less or head keeps the terminal to itself)."""
    if path == "-" or not sys.stderr.isatty():
        return False
    try:
        if size < PROGRESS_MIN_BYTES:
            return False
        if stats:
            return True
        import stat as _stat

        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return _stat.S_ISREG(mode) or _stat.S_ISCHR(mode) and not sys.stdout.isatty()


def run(args: argparse.Namespace) -> int:
    try:
        predicate = compile_filter(args.filter) if args.filter.strip() else None
    except FilterError as exc:
        raise CliError(f"bad filter: {exc}", 2) from None
    output = args.output or ("json" if args.json else "fields" if args.fields else "text")
    if output == "fields" and not args.fields:
        raise CliError("-T fields needs at least one -e FIELD", 2)
    files = _sources(args)
    line = (
        _fields_line(args.fields)
        if output == "fields"
        else (lambda m: strict_json(to_json(m)))
        if output == "json"
        else text_line(args.time_format, args.detail)
    )
    shown_kind = _shown(args.rings)
    if args.detail and not args.rings:
        raise CliError("--detail goes with --rings", 2)

    out = sys.stdout
    write = out.write
    limit = args.count or 0
    shown = 0
    kind_seen = False  # with --rings: a ring/notify frame, whether the filter kept it or not
    readers = _Readers(files, args.stats)
    try:
        if args.stats:
            sessions, firings = tally(readers.frames(), predicate, args.device)
        else:
            pipeline = Pipeline(device=args.device)
            for msg in linked(pipeline, readers.frames()):
                if not shown_kind(msg):
                    continue
                kind_seen = True
                if predicate is not None and not predicate(msg):
                    continue
                write(line(msg) + "\n")
                shown += 1
                if shown == limit:
                    break
    finally:
        readers.close()
    no_rings = args.rings and not kind_seen
    if args.stats:
        rings = ring_table(sessions)
        no_rings = bool(sessions) and not rings  # the rows shown have no vring table
        if args.json:
            table = {
                "filter": args.filter or None,
                "requests": request_table(sessions),
                "connections": connection_table(sessions),
                "rings": rings,
                "firings": firings.table(),
            }
            write(strict_json(table, indent=1) + "\n")
        else:
            write(format_stats(sessions, args.filter.strip(), firings) + "\n")
    out.flush()
    if no_rings:  # one line, as the TUI's Queues tab says it
        print(error_line("read", NO_RINGS), file=sys.stderr)
    for err in readers.damaged:
        print(error_line("read", err), file=sys.stderr)
    return 2 if readers.damaged else 0


class _Readers:
    """The frames of several capture files in sequence, as one stream (with a progress bar).

    Several pcapng files are read as one concatenated stream (each file a new
    origin, so their connection numbers stay apart); otherwise one after another.
    """

    def __init__(self, files: list[str], stats: bool) -> None:
        self.stats = stats
        self.damaged: list[str] = []
        self.reader: Any = None
        self.progress: _Progress | None = None
        self.units: list[str | Concat] = list(files)
        if len(files) > 1 and "-" not in files:
            for path in files:
                self._open(path).close()  # each one a capture: its own error line
            if all(is_pcapng(p) for p in files):
                self.units = [Concat(files)]

    def _open(self, unit: str | Concat) -> Any:
        from .capture import CaptureError, CaptureReader

        name = unit.name if isinstance(unit, Concat) else unit
        try:
            return CaptureReader(sys.stdin.buffer if unit == "-" else unit)
        except CaptureError as exc:
            raise capture_error(name, exc) from None

    def _progress(self, unit: str | Concat, reader: Any) -> _Progress | None:
        if isinstance(unit, Concat):
            if not _want_progress(unit.paths[0], self.stats, sum(unit.sizes)):
                return None
            return _Progress(unit.paths[-1], sum(unit.sizes), lambda: unit.position)
        if unit == "-" or not _want_progress(unit, self.stats, os.path.getsize(unit)):
            return None
        file = getattr(reader, "_file", None)  # the reader's own file: its offset is progress
        return _Progress(unit, os.path.getsize(unit), file.tell) if file is not None else None

    def frames(self) -> Iterator[Any]:
        from .capture import CaptureFormatError

        for unit in self.units:
            self.reader = reader = self._open(unit)
            progress = self.progress = self._progress(unit, reader)
            try:
                if progress is None:
                    yield from reader
                else:
                    for n, frame in enumerate(reader):
                        if not n & 0x3FF:
                            progress.update()
                        yield frame
            except CaptureFormatError as exc:
                raise capture_error(unit.name if isinstance(unit, Concat) else unit, exc) from None
            finally:
                self.close()
                if isinstance(unit, Concat):
                    unit.close()
            if reader.error is not None:
                err = reader.error
                path, offset = (
                    unit.where(err.offset)
                    if isinstance(unit, Concat) and err.offset is not None
                    else (unit, err.offset)
                )
                self.damaged.append(
                    f"{damage_text(str(path), offset, err.reason)}; "
                    f"{reader.frames_read} whole frames before it were read"
                )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.reader is not None:
            self.reader.close()
