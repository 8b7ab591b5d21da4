"""Compare two captures per connection, message by message.

    vuinspect diff before.pcapng after.pcapng
    vuinspect diff a.pcapng b.pcapng --ignore payload.userspace_addr --ignore 'GET_VRING_BASE:payload.*'
    vuinspect diff a.pcapng b.pcapng --json | jq .entries

Requests are matched by order and request name, replies by their request.
Exit 0 when both captures hold the same messages, 1 with the differences.
Never compared: timestamps, frame and conn numbers, latency, fd numbers and
names (fds are compared by role, kind and size).  --ignore takes a field name
(payload.features), a glob (payload.*) or REQUEST:FIELD for one request.
"""

from __future__ import annotations

import argparse
import json

from .compare import compare
from .load import read_messages


def add_report_options(p: argparse.ArgumentParser) -> None:
    """Options shared with ``replay``: one report, one way to ignore fields."""
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="FIELD",
        help="do not compare FIELD (name, glob, or REQUEST:FIELD); repeatable",
    )
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--all", action="store_true", help="list the messages that are the same too")


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("a", metavar="A.pcapng", help="the reference capture")
    p.add_argument("b", metavar="B.pcapng", help="the capture compared with it")
    add_report_options(p)


def print_report(report, args: argparse.Namespace) -> int:  # compare.Report
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.text(all_entries=args.all))
    return 0 if report.equal else 1


def run(args: argparse.Namespace) -> int:
    report = compare(read_messages(args.a), read_messages(args.b), args.ignore)
    return print_report(report, args)
