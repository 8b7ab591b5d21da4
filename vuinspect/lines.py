"""Messages as text lines: the one line format of ``vuinspect read`` and of the proxy's
plain output (``--no-tui``), with tshark's time formats and the data plane's timeline.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import IO

from .dataplane.text import (
    detail_lines,
    in_message_list,
    notify_summary,
    resolved_text,
    ring_summary,
)
from .frames import DATAPLANE_KINDS, Frame
from .message import Message
from .pipeline import Pipeline
from .render import format_ts, safe_text, summary_line

#: -t formats, tshark's letters: ad (UTC date and time), a (UTC time of day, as the TUI
#: shows), r (seconds since the first message), d (since the previous line), e (epoch).
TIME_FORMATS = ("ad", "a", "r", "d", "e")


def time_formatter(fmt: str) -> Callable[[int], str]:
    """ts_ns -> text for a -t format; relative and delta keep their state."""
    base: int | None = None
    prev: int | None = None

    def utc(ts_ns: int, date: bool) -> str:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        try:
            t = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return format_ts(ts_ns)
        return f"{t:%Y-%m-%d %H:%M:%S}.{ns:09d}" if date else f"{t:%H:%M:%S}.{ns:09d}"

    def fmt_ts(ts_ns: int) -> str:
        nonlocal base, prev
        if fmt == "e":
            return format_ts(ts_ns)
        if fmt in ("a", "ad"):
            return utc(ts_ns, fmt == "ad")
        if fmt == "r":
            if base is None:
                base = ts_ns
            return f"{(ts_ns - base) / 1e9:.6f}"
        delta = 0 if prev is None else ts_ns - prev
        prev = ts_ns
        return f"{delta / 1e9:.6f}"

    return fmt_ts


def text_line(fmt: str = "e", detail: bool = False) -> Callable[[Message], str]:
    """Message -> its text line (ring/notify messages as in the ``--rings`` timeline)."""
    fmt_ts = format_ts if fmt == "e" else time_formatter(fmt)

    def line(msg: Message) -> str:
        if msg.kind in DATAPLANE_KINDS:
            return _ring_line(msg, fmt_ts(msg.ts_ns), detail)
        text = summary_line(msg)
        if fmt == "e":
            return text
        head = f"{msg.frame:>6} {format_ts(msg.ts_ns):>12}"
        return f"{msg.frame:>6} {fmt_ts(msg.ts_ns):>12}{text[len(head) :]}"

    return line


def _ring_line(msg: Message, ts: str, detail: bool) -> str:
    """A ring or notify message of the timeline (with --detail: its in-flight chains)."""
    p = msg.payload
    body = ring_summary(p) if msg.kind == "ring" else notify_summary(p)
    parts = [f"{msg.frame:>6} {ts:>12} c{msg.conn:<3} {msg.name:<7} {body}", *resolved_text(p)]
    if msg.problems:
        parts.append("!! " + "; ".join(f"{x.code}: {x.text}" for x in msg.problems))
    text = safe_text(" ".join(parts))
    if detail:
        text = "\n".join([text, *detail_lines(p)])
    return text


def summary_printer(out: IO[str], device: str | None) -> Callable[[Frame], None]:
    """Frame -> one summary line per decoded message, as ``vuinspect read`` prints them."""
    write = out.write
    line = text_line()

    class Printer:  # a sink of the pipeline: it is told each message
        def on_message(self, msg: Message) -> None:
            if in_message_list(msg):  # (ring samples only when they raise or end a problem)
                write(line(msg) + "\n")

    pipeline = Pipeline(device=device, keep_closed=False, sinks=[Printer()])

    def show(frame: Frame) -> None:
        pipeline.feed(frame)

    return show
