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
    try:
        source = FileSource(args.file, follow=args.follow, background=not args.follow)
    except CaptureError as exc:
        raise CliError(str(getattr(exc, "reason", exc))) from None
    try:
        VuInspectApp(source, device=args.device, filter_text=args.filter).run()
    finally:
        source.close()
    return 0
