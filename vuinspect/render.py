"""How a message reads: one summary line, a JSON object, a field tree.

The CLI, the proxy's plain output and the TUI all render through here, so a
message looks the same everywhere.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from .message import Message, ts_text
from .numtext import display_of, number_text
from .protocol.problems import Problem
from .protocol.requests import FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION_MASK

ARROWS = {"f2b": "→", "b2f": "←"}

# What can move the cursor, start an escape sequence, forge a line or reorder what a
# reader sees: C0, DEL, C1; line/paragraph separators; Unicode's Bidi_Control set
# (U+061C, U+200E/F, U+202A-E, U+2066-9).  And surrogates: a JSON "\ud800" escape decodes
# to a lone one, which stdout cannot encode (or, U+DC80-DCFF, writes as a raw byte:
# "\udc9b" reaches the terminal as 0x9B, an 8-bit CSI).
SURROGATES = range(0xD800, 0xE000)
_UNSAFE_CHARS = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x2028,
    0x2029,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    *SURROGATES,
]
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# one table for str.translate: escaping runs at C speed (a Python call per character
# cost ~2 µs: a message of 253 peer-named memfds took the viewer ~120 ms); the Lua
# dissector's esc() is generated from it (wireshark/luagen.py)
ESCAPES = {
    c: _NAMED.get(chr(c)) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE_CHARS
}


def safe_text(text: object) -> str:
    """``text`` with control characters shown as ``\\x1b``, ``\\n``, ``\\t`` escapes.

    Every text a peer or a capture chose (labels, note texts, fd descriptions,
    reasons) passes through here before a terminal shows it, so it can neither
    drive the terminal (ESC sequences) nor forge an output line (newline).
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case, at C speed: no control or format character
        return s
    return s.translate(ESCAPES)


def human_size(n: int) -> str:
    """256MiB, 1.5GiB, 4KiB: the way fd descriptions and summaries show sizes."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value = float(n)
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.0f}{units[i]}" if value == int(value) else f"{value:.1f}{units[i]}"


def _names(p: dict[str, Any], key: str) -> str:
    names = p.get(key + "_names")
    return f" [{' '.join(names)}]" if names else ""


def payload_summary(msg: Message) -> str:
    """The key payload fields of a message in a few words."""
    p = msg.payload
    lay = msg.layout
    if msg.is_event:
        return event_summary(msg)
    if msg.kind == "raw":
        return f"{len(msg.raw)} raw bytes"
    if not p:
        return ""
    try:
        text = _layout_summary(p, lay)
    except KeyError:  # a cut payload lacks its later fields: show the ones present
        text = None
    if text is not None:
        return text
    parts = []
    for k, v in p.items():
        if isinstance(v, (list, dict)) or (isinstance(v, str) and len(v) > 40):
            continue
        parts.append(f"{k}={number_text('payload.' + k, v, lay) if isinstance(v, int) else v}")
        if len(parts) == 4:
            break
    return " ".join(parts)


def _layout_summary(p: dict[str, Any], lay: str | None) -> str | None:
    """The summary of a known layout, or None for the generic one."""

    def n(key: str) -> str:  # a number as every face shows it (numtext)
        return number_text("payload." + key, p[key], lay)

    if lay in ("virtio_features", "protocol_features"):
        return f"{n('features')}{_names(p, 'features')}"
    if lay in ("mem_table", "mem_table_xen"):
        regs = p.get("regions", [])
        total = sum(r.get("memory_size", 0) for r in regs)
        return f"{len(regs)} region{'s' if len(regs) != 1 else ''} {human_size(total)}"
    if lay in ("mem_reg", "mem_reg_xen"):
        return f"gpa={n('guest_phys_addr')} size={human_size(p['memory_size'])}"
    if lay == "vring_fd":
        return f"vring {p['index']}" + (" NOFD" if p.get("nofd") else "")
    if lay == "vring_addr":
        log = " log" if p.get("log") and p["flags"] & 1 else ""
        return f"vring {p['index']} desc={n('desc')} used={n('used')} avail={n('avail')}{log}"
    if lay == "vring_base":
        return f"vring {p['index']} base={n('num')}"
    if lay == "vring_enable":
        return f"vring {p['index']} {p['num_name']}"
    if lay in ("vring_state", "vring_num", "vring_endian"):
        extra = p.get("num_name") or n("num")
        return (
            f"vring {p['index']} num={extra}"
            if lay != "vring_state" or p["num"]
            else f"vring {p['index']}"
        )
    if lay == "ack":
        return "ok" if p["result"] == 0 else f"FAILED result={n('result')}"
    if lay == "status":
        return f"{n('status')}{_names(p, 'status')}"
    if lay == "config":
        return f"offset={n('offset')} size={n('size')} {p['flags_name']}"
    if lay == "iotlb":
        return f"{p['type_name']} iova={n('iova')} size={human_size(p['size'])} {p['perm_name']}"
    if lay == "log":
        return f"size={human_size(p['mmap_size'])} offset={n('mmap_offset')}"
    if lay == "inflight":
        return (
            f"size={human_size(p['mmap_size'])} queues={n('num_queues')} "
            f"queue_size={n('queue_size')}"
        )
    return None


def event_summary(msg: Message) -> str:
    """An open/close/note event in words (escaped: its texts come from the capture)."""
    i = msg.info
    if msg.kind == "open":
        who = i.get("orientation", "")
        dev = f" device={i['device']}" if i.get("device") else ""
        return safe_text(f"connection opened {i.get('label', '')} {who}{dev}".rstrip())
    if msg.kind == "close":
        what = "back-end channel closed" if msg.channel == "backend" else "connection closed"
        return safe_text(f"{what}: {i.get('reason', '')}")
    return safe_text(i.get("text", i))


def format_ts(ts_ns: int, base_ns: int | None = None) -> str:
    """Seconds.nanoseconds (or seconds since ``base_ns``); any 64-bit value formats."""
    if base_ns is not None:
        try:
            return f"{(ts_ns - base_ns) / 1e9:.6f}"
        except OverflowError:
            return f"{(ts_ns - base_ns) // 1_000_000_000}"
    return ts_text(ts_ns)


def clock_text(ts_ns: int, digits: int = 9, date: bool = False) -> str | None:
    """UTC time of day (``date``: with the date) to ``digits`` places of the second, or
    None past the calendar (year > 9999): each face says that in its own width."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    try:
        t = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    frac = f"{ns:09d}"[:digits]
    return f"{t:%Y-%m-%d %H:%M:%S}.{frac}" if date else f"{t:%H:%M:%S}.{frac}"


def fds_text(fds: tuple[str, ...] | list[str]) -> str:
    """The fds of a message as a summary shows them: ``fds=[kick: eventfd, ...]``."""
    return "fds=[" + ", ".join(fds) + "]"


def problems_text(problems: list[Problem]) -> str:
    """The problems of a message as a summary ends: ``!! code: text; code: text``."""
    return "!! " + "; ".join(f"{p.code}: {p.text}" for p in problems)


def summary_line(msg: Message, base_ns: int | None = None) -> str:
    """One line per message, like tshark's summary; a frame comment ends it after ``#``."""
    line = _summary(msg, base_ns)
    return line if msg.comment is None else f"{line}  # {safe_text(msg.comment)}"


def _summary(msg: Message, base_ns: int | None) -> str:
    if msg.is_event:
        head = f"{msg.frame:>6} {format_ts(msg.ts_ns, base_ns):>12} c{msg.conn:<3} {'':7} *"
        return f"{head} {msg.name} {payload_summary(msg)}"
    arrow = ARROWS.get(msg.direction, "?")
    name = msg.name + (" reply" if msg.reply else "")
    if msg.need_reply and not msg.reply:
        name += " (need_reply)"
    parts = [
        f"{msg.frame:>6} {format_ts(msg.ts_ns, base_ns):>12} c{msg.conn:<3} "
        f"{msg.channel:<7} {arrow} {name}"
    ]
    summary = payload_summary(msg)
    if summary:
        parts.append(summary)
    if msg.fds:
        parts.append(fds_text(msg.fds))
    if msg.latency_us is not None:
        parts.append(f"{msg.latency_us:.0f}µs")
    if msg.problems:
        parts.append(problems_text(msg.problems))
    return safe_text(" ".join(parts))


def to_json(msg: Message) -> dict[str, Any]:
    """The NDJSON object of a message (:meth:`Message.to_dict`)."""
    return msg.to_dict()


def tree(msg: Message) -> list[tuple[int, str, str]]:
    """(depth, key path, text) rows for a detail view: every decoded field (texts escaped)."""
    rows: list[tuple[int, str, str]] = []
    if msg.is_event:
        rows.append((0, "event", f"{msg.name}: {event_summary(msg)}"))
        for k, v in msg.info.items():
            rows.append((1, f"info.{k}", f"{k}: {v}"))
        return [(d, key, safe_text(text)) for d, key, text in rows]
    if msg.kind in ("ring", "notify"):  # a data-plane record: no vhost-user header
        what = "Ring sample" if msg.kind == "ring" else "Notifications"
        rows.append((0, "header", f"{what}: vring {msg.payload.get('vring')}"))
    else:
        rows.append((0, "header", f"Header: {msg.name} ({msg.request})"))
    if msg.request is not None:
        rows.append((1, "request", f"request: {msg.request}"))
        flags = msg.flags or 0
        bits = [n for n, m in (("reply", FLAG_REPLY), ("need_reply", FLAG_NEED_REPLY)) if flags & m]
        rows.append(
            (
                1,
                "flags",
                f"flags: {number_text('flags', flags)} version={flags & FLAG_VERSION_MASK}"
                + (f" [{' '.join(bits)}]" if bits else ""),
            )
        )
        rows.append((1, "size", f"size: {msg.size}"))
    if msg.payload:
        label = msg.layout or ("record" if msg.kind in ("ring", "notify") else "raw")
        rows.append((0, "payload", f"Payload ({label})"))
        _tree_items(msg.payload, 1, "payload", rows, msg.layout)
    if msg.fds:
        rows.append((0, "fds", f"fds ({len(msg.fds)})"))
        for i, fd in enumerate(msg.fds):
            rows.append((1, f"fds.{i}", f"[{i}] {fd}"))
    if msg.reply_to is not None:
        rows.append((0, "reply_to", f"Reply to frame {msg.reply_to} ({msg.latency_us:.1f} µs)"))
    if msg.reply_in is not None:
        rows.append((0, "reply_in", f"Reply in frame {msg.reply_in}"))
    if msg.problems:
        rows.append((0, "problems", f"Problems ({len(msg.problems)})"))
        for i, p in enumerate(msg.problems):
            rows.append((1, f"problems.{i}", f"{p.info.severity} {p.code}: {p.text}"))
    return [(d, key, safe_text(text)) for d, key, text in rows]


def _tree_items(
    obj: dict[str, Any], depth: int, path: str, rows: list[tuple[int, str, str]], lay: str | None
) -> None:
    for k, v in obj.items():
        key = f"{path}.{k}"
        if isinstance(v, list) and v and isinstance(v[0], dict):
            rows.append((depth, key, f"{k} ({len(v)})"))
            for i, item in enumerate(v):
                rows.append((depth + 1, f"{key}.{i}", f"[{i}]"))
                _tree_items(item, depth + 2, f"{key}.{i}", rows, lay)
        elif isinstance(v, list):
            rows.append((depth, key, f"{k}: {' '.join(map(str, v)) or '-'}"))
        elif isinstance(v, int) and not isinstance(v, bool):
            rows.append((depth, key, f"{k}: {number_text(key, v, lay)}{_size_note(key, v, lay)}"))
        else:
            rows.append((depth, key, f"{k}: {v}"))


def _size_note(field: str, value: int, lay: str | None) -> str:
    """`` (256MiB)`` after a memory byte count (display ``size``), as the summary says it."""
    return f" ({human_size(value)})" if display_of(field, lay) == "size" and value > 0 else ""
