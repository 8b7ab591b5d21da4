"""Watch, record and analyse vhost-user traffic between a front-end (QEMU) and a back-end.

examples:
  vuinspect proxy --listen /tmp/vu.sock --connect /run/backend.sock -w trace.pcapng
  vuinspect view trace.pcapng
  vuinspect read trace.pcapng -f 'problems'
  vuinspect read --stats trace.pcapng
  vuinspect fields
  vuinspect install-dissector      # then: wireshark trace.pcapng

'vuinspect COMMAND --help' explains each command.
"""

# Each sub-command lives in its own module exposing ``configure(parser)`` and
# ``run(args) -> int``; this file only wires them so that importing one
# sub-command never pulls in another's dependencies (the TUI is not imported to
# read a capture).

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from . import __version__
from .errors import CliError, error_line
from .render import safe_text

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vuinspect.demo.command", "run real QEMU and a real back-end through the proxy"),
    "proxy": ("vuinspect.commands.proxy", "transparent vhost-user proxy with live decoding"),
    "read": ("vuinspect.read", "print, filter or summarise a capture"),
    "view": ("vuinspect.tui.command", "open a capture in the TUI"),
    "fields": ("vuinspect.fields", "list every field name for filters, -T fields and NDJSON"),
    "diff": ("vuinspect.reproduce.diff", "compare two captures message by message"),
    "replay": (
        "vuinspect.reproduce.command",
        "replay a capture against a live back-end (or, --as-backend, a live front-end)",
    ),
    "install-dissector": ("vuinspect.wireshark.install", "install the Wireshark Lua dissector"),
    "gen-lua": ("vuinspect.wireshark.luagen", "regenerate dissectors/vhost_user.lua"),
    "extcap": ("vuinspect.wireshark.extcap", "Wireshark extcap entry point"),
}


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors escape what the user typed (a path or an
    option may hold ESC); sub-command parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        super().error(safe_text(message))


def build_parser() -> Parser:
    parser = Parser(
        prog="vuinspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"vuinspect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # sub-command not built (or not installed) here
            raise
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the sub-command's parser: its usage line, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        check = getattr(args, "_check", None)  # a command's usage checks (exit 2)
        if check is not None:
            check(args)
        return int(args._run(args) or 0)
    except CliError as exc:
        print(error_line(args.command, str(exc)), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
