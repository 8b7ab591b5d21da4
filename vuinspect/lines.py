"""Messages as text lines: the one line format of ``vuinspect read`` and of the proxy's
plain output (``--no-tui``), with tshark's time formats and the data plane's timeline.
"""

from __future__ import annotations

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
from .render import clock_text, format_ts, problems_text, safe_text, summary_line

#: -t formats, tshark's letters: ad (UTC date and time), a (UTC time of day, as the TUI
#: shows), r (seconds since the first message), d (since the previous line), e (epoch).
TIME_FORMATS = ("ad", "a", "r", "d", "e")


def time_formatter(fmt: str) -> Callable[[int], str]:
    """ts_ns -> text for a -t format; relative and delta keep their state."""
    base: int | None = None
    prev: int | None = None

    def fmt_ts(ts_ns: int) -> str:
        nonlocal base, prev
        if fmt in ("a", "ad"):
            return clock_text(ts_ns, date=fmt == "ad") or format_ts(ts_ns)
        if fmt == "r":
            if base is None:
                base = ts_ns
            return format_ts(ts_ns, base)
        if fmt == "d":
            delta = format_ts(ts_ns, ts_ns if prev is None else prev)
            prev = ts_ns
            return delta
        return format_ts(ts_ns)

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
        parts.append(problems_text(msg.problems))
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
