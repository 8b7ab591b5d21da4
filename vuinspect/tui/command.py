"""Open a capture in the TUI.

    vuinspect view capture.pcapng
    vuinspect view capture.pcapng --filter 'problems'
    vuinspect view --follow growing.pcapng      # a capture the proxy is still writing
"""

from __future__ import annotations

import argparse

from vuinspect.cli import CliError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a vuinspect pcapng capture")
    p.add_argument("--filter", default="", metavar="EXPR",
                   help="initial display filter (the language of vuinspect read --filter)")
    p.add_argument("--device", default=None,
                   help="device type for feature names when the capture does not say "
                        "(blk, net, fs, scsi, gpu, ...)")
    p.add_argument("--follow", action="store_true",
                   help="keep reading frames appended to the file (like tail -f)")


def run(args: argparse.Namespace) -> int:
    from vuinspect.capture import CaptureError
    from vuinspect.filter import FilterError, compile_filter

    from .app import VuInspectApp
    from .sources import FileSource

    try:
        compile_filter(args.filter)
    except FilterError as exc:
        raise CliError(f"bad --filter: {exc}") from None
    _refuse_foreign(args.file)
    try:
        source = FileSource(args.file, follow=args.follow, background=not args.follow)
    except CaptureError as exc:
        raise CliError(str(getattr(exc, "reason", exc))) from None
    try:
        VuInspectApp(source, device=args.device, filter_text=args.filter).run()
    finally:
        source.close()
    return 0


def _refuse_foreign(path: str) -> None:
    """One clear line for a file that is not a vuinspect capture, before the TUI starts.

    The TUI indexes in the background, so without this a pcapng of another tool
    would open as an empty view with the reason only in its title.
    """
    import os

    from vuinspect.capture import CaptureError, CaptureFormatError, CaptureReader

    if not os.path.exists(path):
        raise CliError(f"cannot open capture {path}: No such file or directory")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory")
    if os.path.getsize(path) == 0:
        return  # a capture about to be written (--follow)
    try:
        with CaptureReader(path) as reader:
            next(iter(reader), None)  # the first packet tells a foreign link type
    except CaptureFormatError as exc:
        raise CliError(f"{path}: not a vuinspect capture: {exc.reason}") from None
    except CaptureError:
        pass  # damage is shown in the TUI, which keeps every whole frame before it
