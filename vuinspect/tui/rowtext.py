"""The cells of one message-list row: column texts plus a style key per cell.

Kept apart from the widget so that the list, its header and the tests agree on
the columns, and so that a row costs one re-decode plus string formatting.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size

from vuinspect.dataplane.text import notify_summary, resolved_text, ring_summary
from vuinspect.frames import DATAPLANE_KINDS
from vuinspect.message import Message
from vuinspect.protocol.problems import worst
from vuinspect.render import (
    ARROWS,
    clock_text,
    fds_text,
    format_ts,
    payload_summary,
    problems_text,
    safe_text,
)

from .model import EMPTY, ODD, PENDING, Model

TIME_MODES = ("abs", "rel", "delta")
TIME_TITLES = {"abs": "Time (UTC)", "rel": "Time (s)", "delta": "Δt (s)"}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("mark", "", 1),
    Column("frame", "No.", 7, True),
    Column("time", "Time", 15, True),
    Column("conn", "Conn", 4),
    Column("channel", "Chan", 7),
    Column("dir", "", 1),
    Column("name", "Message", 30),
    Column("fds", "fds", 3, True),
    Column("latency", "Latency", 8, True),
    Column("problem", "!", 1),
    Column("summary", "Summary", 0),
)
FIXED_WIDTH = sum(c.width + 1 for c in COLUMNS[:-1])
SUMMARY_MIN = 60
LINE_WIDTH = FIXED_WIDTH + SUMMARY_MIN


def format_latency(us: float | None) -> str:
    if us is None:
        return ""
    if us < 1000:
        return f"{us:.0f}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"


def format_time(ts_ns: int, mode: str, base_ns: int | None, prev_ns: int | None) -> str:
    """The time column; a timestamp no calendar can show (year > 9999) reads as ``1.845e+28ns``."""
    if mode == "rel" and base_ns is not None:
        return format_ts(ts_ns, base_ns)
    if mode == "delta":
        return "+" + format_ts(ts_ns, ts_ns if prev_ns is None else prev_ns)
    # fits the column; still says what the capture holds
    return clock_text(ts_ns, digits=6) or f"{ts_ns:.4g}ns"


def _dataplane_summary(msg: Message) -> str:
    """A ring/notify row: the timeline line ``read --rings`` prints (one wording)."""
    p = msg.payload
    if msg.kind == "notify":
        return notify_summary(p)
    return "  ".join([ring_summary(p), *resolved_text(p)])


def header_cells(time_mode: str) -> list[tuple[str, str]]:
    cells = []
    for c in COLUMNS:
        title = TIME_TITLES[time_mode] if c.key == "time" else c.title
        cells.append((title, "header"))
    return cells


def row_cells(
    model: Model, pos: int, *, time_mode: str, base_ns: int | None, marked: bool, held: int = 0
) -> list[tuple[str, str]]:
    """(text, style key) per column for the row shown at view position ``pos``;
    ``held``: the intercept's hold number of a message the proxy holds (0: not held)."""
    row = model.row_at(pos)
    frame = model.frame(row)
    msgs = model.messages(row)
    prev_ns = None
    if time_mode == "delta" and pos > 0:
        prev_ns = model.frame(model.row_at(pos - 1)).ts_ns
    bits = model.bits[row] if model.is_decoded(row) else 0
    msg = msgs[0] if msgs else None
    direction = frame.direction if frame.kind == "data" else "event"
    dstyle: str = direction
    name = summary = lat = ""
    sev = None
    nfds = len(frame.fds)
    if msg is None:
        name = "(partial)"
        summary = f"{len(frame.data)} bytes of a message completed in a later frame"
    else:
        name = (
            msg.name
            + (" reply" if msg.reply else "")
            + (" (nr)" if msg.need_reply and not msg.reply else "")
        )
        summary = _dataplane_summary(msg) if msg.kind in DATAPLANE_KINDS else payload_summary(msg)
        if msg.fds:
            summary += (" " if summary else "") + fds_text(msg.fds)
        if len(msgs) > 1:
            summary += f"  (+{len(msgs) - 1} more in this frame)"
        problems = [p for m in msgs for p in m.problems]
        if problems:
            summary += "  " + problems_text(problems)
            sev = worst(problems)
        summary = safe_text(summary)
        if msg.reply:
            lat = format_latency(msg.latency_us)
        elif bits & PENDING:
            lat = "waiting"
        if msg.is_event:
            dstyle = "event"
    if bits & EMPTY and bits & ODD:
        dstyle = "event"
    if held:  # (first in the name: seen on the narrowest terminal)
        name = f"HELD #{held} {name}"
        dstyle = "waiting"
    texts = {
        "mark": "●"
        if marked
        else "H"
        if held
        else ("✎" if model.comments.get(row, frame.comment) else " "),
        "frame": str(row + 1),
        "time": format_time(frame.ts_ns, time_mode, base_ns, prev_ns),
        "conn": f"c{frame.conn}",
        "channel": frame.channel if frame.kind == "data" else "",
        "dir": ARROWS.get(frame.direction, "?") if frame.kind == "data" else "•",
        "name": name,
        "fds": str(nfds) if nfds else "",
        "latency": lat,
        "problem": "!" if sev in ("error", "warning") else ("·" if sev else ""),
        "summary": summary,
    }
    styles = {
        "mark": "mark",
        "name": dstyle,
        "dir": dstyle,
        "latency": "waiting" if lat == "waiting" else "latency",
        "problem": f"problem-{sev}" if sev else "plain",
        "summary": "plain",
    }
    return [
        (texts[c.key], styles.get(c.key, "dim" if c.key in ("time", "frame") else "plain"))
        for c in COLUMNS
    ]


def layout_cells(cells: list[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """Pad/crop every cell to its column and join with single spaces (``width`` total)."""
    out: list[tuple[str, str]] = []
    used = 0
    for (text, style), col in zip(cells, COLUMNS, strict=True):
        w = col.width if col.width else max(0, width - used)
        if col.width:
            if cell_len(text) > w:
                text = set_cell_size(text, w - 1) + "…" if w > 1 else set_cell_size(text, w)
            else:
                text = text.rjust(w) if col.right else text.ljust(w)
            out.append((text, style))
            out.append((" ", "plain"))
            used += w + 1
        else:
            out.append((set_cell_size(text, w), style))
            used += w
    return out
