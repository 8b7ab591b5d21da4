"""Open a capture in the TUI (the same view as the live proxy).

examples:
  vuinspect view captures/blk.pcapng
  vuinspect view -r captures/blk.pcapng -f 'problems'
  vuinspect view --follow growing.pcapng      # a capture the proxy is still writing
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import TYPE_CHECKING

from vuinspect.capture.errors import capture_error, check_path
from vuinspect.errors import CliError

if TYPE_CHECKING:
    from .sources import Source


def configure(p: argparse.ArgumentParser) -> None:
    """The same flags as ``vuinspect read`` where they mean the same thing."""
    from vuinspect.protocol.features import DEVICE_TYPES

    p.add_argument("file_arg", nargs="?", metavar="file", help="a vuinspect pcapng capture")
    p.add_argument(
        "-r", "--read-file", dest="file", metavar="FILE", help="the capture to open (as tshark -r)"
    )
    p.add_argument(
        "-f",
        "-Y",
        "--filter",
        default="",
        metavar="EXPR",
        help="initial display filter (the language of vuinspect read --filter; -Y as in tshark)",
    )
    p.add_argument(
        "--device",
        default=None,
        choices=DEVICE_TYPES,
        help="device type for feature names when the capture does not say",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep reading frames appended to the file (like tail -f)",
    )
    p.set_defaults(_check=_check_file)


def _check_file(args: argparse.Namespace) -> None:
    """Usage errors before the TUI starts: exit 2, one line (as read does)."""
    from vuinspect.filter import FilterError, compile_filter

    if args.file and args.file_arg:
        raise CliError("give the capture once: FILE or -r FILE", 2)
    args.file = args.file or args.file_arg
    if not args.file:
        raise CliError("no capture file: give one (or -r FILE)", 2)
    try:
        compile_filter(args.filter)
    except FilterError as exc:
        raise CliError(f"bad filter: {exc}", 2) from None


def run(args: argparse.Namespace) -> int:
    from vuinspect.filter import FilterError, compile_filter

    from .app import VuInspectApp
    from .launch import crash_error, on_terminal, run_app

    try:
        compile_filter(args.filter)
    except FilterError as exc:
        raise CliError(f"bad --filter: {exc}") from None
    _refuse_foreign(args.file, args.follow)
    if not on_terminal():
        raise CliError(
            "the TUI needs a terminal (stdin and stdout); to print the capture: "
            f"vuinspect read {shlex.quote(args.file)}",
            2,
        )
    source = open_source(args.file, args.follow)
    app = VuInspectApp(source, device=args.device, filter_text=args.filter)
    try:
        crash = run_app(app)
    finally:
        source.close()
    if crash is not None:
        raise crash_error(crash)
    return 0 if app.return_code in (0, None) else app.return_code


def open_source(path: str, follow: bool) -> Source:
    """The view's source: the capture, indexed in the background; with ``follow`` it is
    followed as it grows, and waited for while it does not exist yet."""
    from vuinspect.capture import CaptureError

    from .awaited import AwaitedFile
    from .sources import FileSource

    if follow and not os.path.exists(path):
        return AwaitedFile(path)
    try:
        return FileSource(path, follow=follow, background=not follow)
    except CaptureError as exc:
        raise capture_error(path, exc) from None


def _refuse_foreign(path: str, follow: bool) -> None:
    """One clear line for a file that cannot be opened or is not a vuinspect capture,
    before the TUI starts, worded as ``vuinspect read`` words it.

    The TUI indexes in the background, so without this a pcapng of another tool
    would open as an empty view with the reason only in its title.  With ``follow``
    a missing or empty file is a capture about to be written: waited for.
    """
    from vuinspect.capture import CaptureError, CaptureFormatError, CaptureReader

    if follow and (not os.path.exists(path) or os.path.isfile(path) and not os.path.getsize(path)):
        return
    check_path(path)
    try:
        reader = CaptureReader(path)
    except CaptureError as exc:
        raise capture_error(path, exc) from None
    try:
        with reader:
            next(iter(reader), None)  # the first packet tells a foreign link type
    except CaptureFormatError as exc:
        raise capture_error(path, exc) from None
    except CaptureError:
        pass  # damage is shown in the TUI, which keeps every whole frame before it
