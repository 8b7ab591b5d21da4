"""Compare two decoded sessions message by message: the one comparison of diff and replay.

Connections are paired by order of appearance (conn numbers are ignored).  In
each channel the requests are aligned by order and request name (a bounded
look-ahead resynchronises after a missing or an extra request, so the walk
stays linear); each reply is compared with the reply of the request it answers.
Fields carry the decoder's names (``payload.features``, ``flags``, ``fds`` ...).
Timestamps, frame numbers, conn numbers, latencies and fd identities are never
compared; fds are reduced to their role, kind and size.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..fields import without_index
from ..frames import DATAPLANE_KINDS
from ..message import Message
from ..numtext import number_text
from ..protocol.requests import split_fd_role
from ..render import safe_text

#: What is never compared (documented for ``--help`` and the report).
DEFAULT_IGNORED = (
    "ts",
    "ts_ns",
    "frame",
    "index",
    "conn",
    "latency_us",
    "reply_to",
    "reply_in",
    "fd numbers, memfd names and file paths",
)
#: How far ahead the alignment looks for a request that went missing or was added.
LOOKAHEAD = 16
#: Most byte offsets named in the note of one differing hex field.
MAX_OFFSETS = 8

STATUSES = ("same", "different", "missing", "unexpected")
_SIZE = re.compile(r"\bsize=\S+")


@dataclass(slots=True)
class FieldDiff:
    field: str
    a: Any
    b: Any
    note: str = ""
    layout: str | None = None  # the message's, for how its numbers read (not in the JSON)

    def to_json(self) -> dict[str, Any]:
        out = {"field": self.field, "a": self.a, "b": self.b}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(slots=True)
class Entry:
    """One message of either side: same, different, missing (only in A) or unexpected (only in B)."""

    status: str
    conn: int  # position of the connection pair, from 1
    channel: str
    name: str
    reply: bool
    a_frame: int | None = None
    b_frame: int | None = None
    diffs: list[FieldDiff] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "conn": self.conn,
            "channel": self.channel,
            "name": self.name,
            "reply": self.reply,
            "a_frame": self.a_frame,
            "b_frame": self.b_frame,
            "fields": [d.to_json() for d in self.diffs],
        }


@dataclass(slots=True)
class Report:
    entries: list[Entry] = field(default_factory=list)
    ignored: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  # e.g. the replay's timeouts

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for e in self.entries:
            out[e.status] += 1
        return out

    @property
    def equal(self) -> bool:
        return all(e.status == "same" for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "counts": self.counts,
            "ignored": list(self.ignored),
            "default_ignored": list(DEFAULT_IGNORED),
            "notes": list(self.notes),
            "entries": [e.to_json() for e in self.entries],
        }

    def text(self, *, all_entries: bool = False) -> str:
        """A readable diff: one line per message that is not the same, then its fields."""
        lines = []
        for e in self.entries:
            if e.status == "same" and not all_entries:
                continue
            where = f"A#{e.a_frame}" if e.a_frame is not None else ""
            if e.b_frame is not None:
                where += ("/" if where else "") + f"B#{e.b_frame}"
            what = e.name + (" reply" if e.reply else "")
            lines.append(f"c{e.conn} {e.channel:<7} {where:<12} {safe_text(what)}: {e.status}")
            for d in e.diffs:
                note = f"  ({safe_text(d.note)})" if d.note else ""
                a, b = show(d.a, d.field, d.layout), show(d.b, d.field, d.layout)
                lines.append(f"    {d.field}: {a} -> {b}{note}")
        lines += [f"note: {safe_text(n)}" for n in self.notes]
        c = self.counts
        lines.append(
            ", ".join(f"{c[s]} {s}" for s in STATUSES) + (" (equal)" if self.equal else "")
        )
        return "\n".join(lines)


# -- values ---------------------------------------------------------------------------------


def show(value: Any, name: str = "", layout: str | None = None, limit: int = 96) -> str:
    """A compared value of field ``name`` in the report (numbers by numtext's one rule)."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return number_text(name, value, layout)
    text = safe_text(", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fd_kind(desc: str) -> str:
    """``guest-memory: memfd:ram size=256MiB`` -> ``guest-memory: memfd size=256MiB``."""
    role, what = split_fd_role(desc)
    kind = what.split(" ", 1)[0]
    if kind.startswith(("memfd:", "file:", "hugetlbfs:", "chardev:", "dir:")):
        kind = kind.split(":", 1)[0]
    size = _SIZE.search(what)
    out = kind + (f" {size.group(0)}" if size else "") + (" hugetlb" if " hugetlb" in what else "")
    return f"{role}: {out}" if role else out


def fields(msg: Message) -> dict[str, Any]:
    """The comparable fields of a message, flattened with the decoder's names."""
    out: dict[str, Any] = {
        "kind": msg.kind,
        "name": msg.name,
        "request": msg.request,
        "flags": msg.flags,
        "reply": msg.reply,
        "need_reply": msg.need_reply,
        "size": msg.size,
        "layout": msg.layout,
        "fds": [fd_kind(d) for d in msg.fds],
        "problems": sorted({p.code for p in msg.problems}),
    }
    if msg.kind == "raw":
        out["raw"] = msg.raw.hex()
    stack: list[tuple[str, dict[str, Any]]] = [("payload", msg.payload)]
    while stack:  # iterative: the decoder's payloads are shallow, but input never sets depth
        prefix, obj = stack.pop()
        for key, value in obj.items():
            if key.endswith(("_name", "_names")) and key.rsplit("_", 1)[0] in obj:
                continue  # derived from its number; named in the note instead
            name = f"{prefix}.{key}"
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                out[f"{name}.count"] = len(value)
                stack.extend((f"{name}.{i}", v) for i, v in enumerate(value))
            elif isinstance(value, dict):
                stack.append((name, value))
            else:
                out[name] = value
    return out


def _note(name: str, a_msg: Message, b_msg: Message, a: Any, b: Any) -> str:
    key = name.removeprefix("payload.")
    if "." not in key:
        an, bn = a_msg.payload.get(key + "_names"), b_msg.payload.get(key + "_names")
        if isinstance(an, list) and isinstance(bn, list):
            plus = [f"+{x}" for x in bn if x not in an]
            minus = [f"-{x}" for x in an if x not in bn]
            return " ".join(plus + minus)
        an, bn = a_msg.payload.get(key + "_name"), b_msg.payload.get(key + "_name")
        if an is not None or bn is not None:
            return f"{an} -> {bn}"
    if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) and len(a) % 2 == 0:
        try:
            ab, bb = bytes.fromhex(a), bytes.fromhex(b)
        except ValueError:
            return ""
        offs = [i for i in range(len(ab)) if ab[i] != bb[i]]
        listed = ", ".join(f"[{i}] {ab[i]:02x}->{bb[i]:02x}" for i in offs[:MAX_OFFSETS])
        more = " ..." if len(offs) > MAX_OFFSETS else ""
        return f"{len(offs)} byte(s) differ: {listed}{more}"
    return ""


class Ignore:
    """``--ignore`` patterns: a field name or glob, optionally scoped ``REQUEST:field``."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._rules: list[tuple[str | None, str]] = []
        for p in self.patterns:
            scope, sep, pat = p.partition(":")
            self._rules.append((scope, pat) if sep else (None, p))

    def __call__(self, request: str, name: str) -> bool:
        # an array item's field is also its array's, as in a filter: ``payload.regions.0.x``
        # is matched by ``payload.regions.0.x`` and by ``payload.regions.x``
        names = (name, without_index(name)) if "." in name else (name,)
        for scope, pat in self._rules:
            if scope is not None and not fnmatch.fnmatchcase(request, scope):
                continue
            for n in names:
                if fnmatch.fnmatchcase(n, pat) or n.startswith(pat + "."):
                    return True
        return False


def compare_messages(a: Message, b: Message, ignore: Ignore) -> list[FieldDiff]:
    fa, fb = fields(a), fields(b)
    out = []
    for name in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(name), fb.get(name)
        if va != vb and not ignore(a.name, name):
            out.append(FieldDiff(name, va, vb, _note(name, a, b, va, vb), a.layout or b.layout))
    return out


# -- alignment ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    key: str
    msg: Message
    reply: Message | None = None


def _units(messages: list[Message]) -> dict[str, list[_Unit]]:
    """Per channel: each request (or orphan reply, or raw chunk) with the reply it got."""
    by_frame = {m.frame: m for m in messages if m.kind == "message" and m.reply}
    used: set[int] = set()
    out: dict[str, list[_Unit]] = {}
    for m in messages:
        if (
            m.is_event
            or m.kind in DATAPLANE_KINDS  # (ring samples: guest memory, not messages)
            or (m.kind == "message" and m.reply and m.reply_to is not None)
        ):
            continue
        key = f"{m.name} reply" if m.kind == "message" and m.reply else m.name or m.kind
        reply = by_frame.get(m.reply_in) if m.reply_in is not None else None
        if reply is not None:
            used.add(reply.frame)
        out.setdefault(m.channel, []).append(_Unit(key, m, reply))
    # a reply whose request is elsewhere (or was not framed) still counts, in order
    for m in messages:
        if m.kind == "message" and m.reply and m.reply_to is not None and m.frame not in used:
            out.setdefault(m.channel, []).append(_Unit(f"{m.name} reply", m))
    return out


def _find(units: list[_Unit], start: int, key: str) -> int | None:
    for k in range(1, LOOKAHEAD + 1):
        if start + k < len(units) and units[start + k].key == key:
            return k
    return None


def _one_side(status: str, pos: int, channel: str, u: _Unit, side: str) -> list[Entry]:
    out = []
    for m, is_reply in ((u.msg, u.msg.reply), (u.reply, True)):
        if m is None:
            continue
        e = Entry(status, pos, channel, m.name or m.kind, is_reply)
        setattr(e, f"{side}_frame", m.frame)
        out.append(e)
    return out


def _pair(pos: int, channel: str, ua: _Unit, ub: _Unit, ignore: Ignore) -> list[Entry]:
    diffs = compare_messages(ua.msg, ub.msg, ignore)
    out = [
        Entry(
            "different" if diffs else "same",
            pos,
            channel,
            ua.msg.name or ua.msg.kind,
            ua.msg.reply,
            ua.msg.frame,
            ub.msg.frame,
            diffs,
        )
    ]
    ra, rb = ua.reply, ub.reply
    if ra is not None and rb is not None:
        diffs = compare_messages(ra, rb, ignore)
        out.append(
            Entry(
                "different" if diffs else "same",
                pos,
                channel,
                ra.name,
                True,
                ra.frame,
                rb.frame,
                diffs,
            )
        )
    elif ra is not None:
        out.append(Entry("missing", pos, channel, ra.name, True, a_frame=ra.frame))
    elif rb is not None:
        out.append(Entry("unexpected", pos, channel, rb.name, True, b_frame=rb.frame))
    return out


def align(pos: int, channel: str, a: list[_Unit], b: list[_Unit], ignore: Ignore) -> list[Entry]:
    """Walk both sequences once; a bounded look-ahead skips what only one side has."""
    out: list[Entry] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i].key == b[j].key:
            out += _pair(pos, channel, a[i], b[j], ignore)
            i += 1
            j += 1
            continue
        k = _find(b, j, a[i].key)  # b has extra messages before a[i]
        n = _find(a, i, b[j].key)  # a has messages b lacks before b[j]
        if k is not None and (n is None or k <= n):
            for u in b[j : j + k]:
                out += _one_side("unexpected", pos, channel, u, "b")
            j += k
        elif n is not None:
            for u in a[i : i + n]:
                out += _one_side("missing", pos, channel, u, "a")
            i += n
        else:
            out += _one_side("missing", pos, channel, a[i], "a")
            out += _one_side("unexpected", pos, channel, b[j], "b")
            i += 1
            j += 1
    for u in a[i:]:
        out += _one_side("missing", pos, channel, u, "a")
    for u in b[j:]:
        out += _one_side("unexpected", pos, channel, u, "b")
    return out


def by_connection(messages: Iterable[Message]) -> list[list[Message]]:
    """Messages grouped per connection, connections in order of first appearance."""
    groups: dict[int, list[Message]] = {}
    for m in messages:
        groups.setdefault(m.conn, []).append(m)
    return list(groups.values())


def compare(a: Iterable[Message], b: Iterable[Message], ignore: Iterable[str] = ()) -> Report:
    """Compare two decoded captures (or two connections) message by message."""
    ign = Ignore(ignore)
    ca, cb = by_connection(a), by_connection(b)
    report = Report(ignored=ign.patterns)
    for pos in range(max(len(ca), len(cb))):
        ua = _units(ca[pos]) if pos < len(ca) else {}
        ub = _units(cb[pos]) if pos < len(cb) else {}
        for channel in ("main", "backend", *sorted((set(ua) | set(ub)) - {"main", "backend"})):
            report.entries += align(pos + 1, channel, ua.get(channel, []), ub.get(channel, []), ign)
    return report
