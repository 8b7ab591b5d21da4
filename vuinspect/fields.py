"""The field table: every name a message has, as data.

One source for the filter language (names, aliases, types, allowed values),
``vuinspect fields`` (like ``tshark -G fields``), ``-T fields -e NAME``, the TUI's
completion and the README table.  The names are the same as the Python
attribute, the NDJSON key and the Wireshark field ``vhost_user.<name>``; old
names are listed as aliases and accepted only by the filter.

``payload.<name>`` fields are derived from the layout tables in
:mod:`vuinspect.protocol.layouts`, so a new layout field is filterable at once.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from .dataplane.headers import HEADERS
from .protocol.layouts import ALL_LAYOUTS, VRING_BASE_KEYS, Array, Field, Layout, Tail
from .protocol.problems import CODES, SEVERITIES
from .protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS, WIRESHARK_NAME
from .verdict import FIRING_NOTE_KEYS

#: Value types: int, float, str, bool, list (of strings: fds, problems, *_names) and time
#: (seconds.nanoseconds since the epoch, exact: the text "1764000000.123456789").
Type = str


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One filter/NDJSON name: its type, what it means, its old names, its allowed values."""

    name: str
    type: Type
    meaning: str
    aliases: tuple[str, ...] = ()
    values: tuple[str, ...] = ()  # closed set of string values ('' = open)


EVENT_NAMES = ("OPEN", "CLOSE", "NOTE")
KINDS = ("message", "raw", "open", "close", "note", "ring", "notify")
#: names of the data-plane messages (kind ring / notify)
DATAPLANE_NAMES = ("RING", "NOTIFY")
_REQUEST_NAMES = tuple(
    dict.fromkeys(
        n for s in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS) for n in (s.name, *s.old_names)
    )
)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("frame", "int", "number of the capture frame that completed the message"),
    FieldSpec("index", "int", "message number, counting every message and event"),
    FieldSpec(
        "ts",
        "time",
        'seconds since the epoch to the nanosecond, the text "1764000000.123456789" '
        "(filters compare it exactly)",
    ),
    FieldSpec("ts_ns", "int", "time in nanoseconds since the epoch"),
    FieldSpec("conn", "int", "connection number (c1, c2, ... in the summary)"),
    FieldSpec(
        "channel",
        "str",
        "main (front-end requests) or backend (back-end channel)",
        values=("main", "backend"),
    ),
    FieldSpec(
        "direction",
        "str",
        "f2b: front-end to back-end; b2f: back-end to front-end",
        aliases=("dir",),
        values=("f2b", "b2f"),
    ),
    FieldSpec(
        "kind",
        "str",
        "message, raw (bytes that do not frame), open, close, note, "
        "ring (a vring sample) or notify (kicks/calls counted)",
        values=KINDS,
    ),
    FieldSpec("request", "int", "request id from the header (a request name works too)"),
    FieldSpec(
        "name",
        "str",
        "request name (old names match too), OPEN/CLOSE/NOTE, RAW, RING or NOTIFY",
        values=(*_REQUEST_NAMES, *EVENT_NAMES, "RAW", *DATAPLANE_NAMES),
    ),
    FieldSpec(
        "reply", "bool", "true for a reply (sent by the side that answers)", aliases=("is_reply",)
    ),
    FieldSpec("need_reply", "bool", "the NEED_REPLY flag is set"),
    FieldSpec("flags", "int", "header flags word"),
    FieldSpec("size", "int", "payload size announced in the header"),
    FieldSpec(
        "layout",
        "str",
        "name of the payload layout used to decode",
        values=tuple(dict.fromkeys(lay.name for lay in ALL_LAYOUTS)),
    ),
    FieldSpec("fds", "list", "the fds carried, described (role: kind, size)"),
    FieldSpec("reply_to", "int", "in a reply: frame number of its request"),
    FieldSpec("reply_in", "int", "in a request: frame number of its reply"),
    FieldSpec("latency_us", "float", "in a reply: microseconds since its request"),
    FieldSpec(
        "problems",
        "list",
        "problem codes; bare 'problems' means a warning or an error",
        aliases=("problem", "problem_codes"),
        values=tuple(CODES),
    ),
    FieldSpec(
        "severity",
        "str",
        "highest severity of the problems: error, warning or note",
        values=SEVERITIES,
    ),
    FieldSpec(
        "comment", "str", "the capture's comment on the frame (pcapng, editcap -a or the TUI's c)"
    ),
)

#: the Wireshark field of a name is this prefix + the name (vhost_user.payload.num)
WIRESHARK_PREFIX = WIRESHARK_NAME + "."

BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
ALIASES: dict[str, str] = {a: f.name for f in FIELDS for a in f.aliases}

#: String keys of open/close/note events, shown as payload.<key> of an event.
EVENT_KEYS = (
    "label",
    "listen",
    "connect",
    "orientation",
    "device",
    "byteorder",
    "reason",
    "by",
    "text",
)


_PROBLEM_KEYS: dict[str, tuple[Type, str]] = {
    "code": ("str", "problem code"),
    "severity": ("str", "error, warning or note"),
    "text": ("str", "what is wrong"),
}

#: Payload keys of ``ring`` frames: ``dataplane.RingSample.to_json()``, the sampler's
#: ``event``/``chains`` and the pipeline's ``resolved``.  path -> (type, meaning);
#: tests/core/test_filter.py checks it against what they really write.
RING_KEYS: dict[str, tuple[Type, str]] = {
    "vring": ("int", "vring index"),
    "ts_ns": ("int", "time of the sample (ns since the epoch)"),
    "layout": ("str", "split or packed"),
    "num": ("int", "queue size"),
    "ok": ("bool", "the ring could be read"),
    "avail_idx": ("int", "driver's avail index (packed: slots made available, u16)"),
    "used_idx": ("int", "device's used index (packed: slots used, u16)"),
    "in_flight": ("int", "requests in flight: avail_idx - used_idx (u16)"),
    "avail_flags": ("int", "split: avail ring flags (1 = NO_INTERRUPT)"),
    "used_flags": ("int", "split: used ring flags (1 = NO_NOTIFY)"),
    "used_event": ("int", "split, EVENT_IDX: used index the driver wants a call at"),
    "avail_event": ("int", "split, EVENT_IDX: avail index the device wants a kick at"),
    "avail_pos": ("int", "packed: next avail slot"),
    "avail_wrap": ("int", "packed: driver wrap counter"),
    "used_pos": ("int", "packed: next used slot"),
    "used_wrap": ("int", "packed: device wrap counter"),
    "driver_event_off": ("int", "packed: driver event suppression offset"),
    "driver_event_wrap": ("int", "packed: driver event suppression wrap"),
    "driver_event_flags": ("int", "packed: driver event flags (0 enable, 1 disable, 2 desc)"),
    "device_event_off": ("int", "packed: device event suppression offset"),
    "device_event_wrap": ("int", "packed: device event suppression wrap"),
    "device_event_flags": ("int", "packed: device event flags (0 enable, 1 disable, 2 desc)"),
    "call_fd": ("str", "the back-end's call fd as forwarded: fd, nofd or none (no SET_VRING_CALL)"),
    "event": ("str", "why sampled: start, stop, control or tick"),
    "problems": ("list", "problems of the sample"),
    **{f"problems.{k}": v for k, v in _PROBLEM_KEYS.items()},
    "chains": ("list", "descriptor chains of in-flight heads"),
    "chains.head": ("int", "head descriptor index"),
    "chains.descs": ("list", "descriptors of the chain"),
    "chains.descs.index": ("int", "descriptor slot"),
    "chains.descs.addr": ("int", "buffer address"),
    "chains.descs.len": ("int", "buffer length"),
    "chains.descs.flags": ("int", "descriptor flags"),
    "chains.descs.flag_names": ("list", "names of the descriptor flags"),
    "chains.descs.next": ("int", "split: next descriptor; packed: buffer id"),
    "chains.descs.indirect_table": ("bool", "read from an indirect table"),
    "chains.problems": ("list", "problems of the chain"),
    **{f"chains.problems.{k}": v for k, v in _PROBLEM_KEYS.items()},
    "chains.header.layout": ("str", "layout of the request header"),
    "chains.truncated": ("bool", "the walk stopped at its budget"),
    "chains.readable": ("int", "bytes the device reads"),
    "chains.writable": ("int", "bytes the device writes"),
    "inflight.queue": ("int", "INFLIGHT_SHMFD region: queue index"),
    "inflight.layout": ("str", "INFLIGHT_SHMFD region: split or packed"),
    "inflight.version": ("int", "INFLIGHT_SHMFD region: version (0 = not set up)"),
    "inflight.desc_num": ("int", "INFLIGHT_SHMFD region: descriptor states"),
    "inflight.used_idx": ("int", "INFLIGHT_SHMFD region: the back-end's used index"),
    "inflight.last_batch_head": ("int", "INFLIGHT_SHMFD region, split: last batch head"),
    "inflight.free_head": ("int", "INFLIGHT_SHMFD region, packed: free head"),
    "inflight.old_free_head": ("int", "INFLIGHT_SHMFD region, packed: old free head"),
    "inflight.old_used_idx": ("int", "INFLIGHT_SHMFD region, packed: old used index"),
    "inflight.used_wrap_counter": ("int", "INFLIGHT_SHMFD region, packed: used wrap counter"),
    "inflight.old_used_wrap_counter": ("int", "INFLIGHT_SHMFD region, packed: old wrap"),
    "inflight.count": ("int", "INFLIGHT_SHMFD region: descriptors marked in flight"),
    "inflight.descs": ("list", "INFLIGHT_SHMFD region: marked descriptors, oldest first"),
    "inflight.descs.index": ("int", "descriptor slot"),
    "inflight.descs.counter": ("int", "submission counter (the order a restart resubmits in)"),
    "inflight.descs.next": ("int", "next state in the chain"),
    "inflight.descs.last": ("int", "packed: last descriptor of the chain"),
    "inflight.descs.num": ("int", "packed: descriptors in the chain"),
    "inflight.descs.id": ("int", "packed: buffer id"),
    "inflight.descs.flags": ("int", "packed: descriptor flags"),
    "inflight.descs.len": ("int", "packed: buffer length"),
    "inflight.descs.addr": ("int", "packed: buffer address"),
    "inflight.problems": ("list", "problems reading the INFLIGHT_SHMFD region"),
    **{f"inflight.problems.{k}": v for k, v in _PROBLEM_KEYS.items()},
    "resolved": ("list", "diagnoses this sample ends"),
    "resolved.code": ("str", "problem code ended"),
    "resolved.since_ns": ("int", "when the condition began"),
    "resolved.until_ns": ("int", "when it ended"),
    "resolved.duration_ns": ("int", "how long it lasted (ns)"),
    "resolved.resolution": ("str", "what ended it: progress, kick, call, driver or reset"),
    "resolved.text": ("str", "the diagnosis"),
}

#: Payload keys of ``notify`` frames (``frames.notify_frame``): one window of one vring.
NOTIFY_KEYS: dict[str, tuple[Type, str]] = {
    "vring": ("int", "vring index"),
    "signal": ("str", "kick, call or err"),
    "count": ("int", "signals in the window"),
    "first_ns": ("int", "first signal of the window (ns since the epoch)"),
    "last_ns": ("int", "last signal of the window"),
}


def canonical(name: str) -> str | None:
    """The canonical name of a top-level field or alias; None when unknown."""
    if name in BY_NAME:
        return name
    return ALIASES.get(name)


def _int_type(f: Field) -> Type:
    return "str" if f.is_bytes else "int"


def _layout_fields(layout: Layout, prefix: str, out: dict[str, dict[str, str]]) -> None:
    """Collect ``payload.<path>`` -> {type: layout} from one layout (arrays are one level)."""

    def add(name: str, typ: Type, doc: str = "") -> None:
        entry = out.setdefault(prefix + name, {})
        have = entry.get(typ)
        if have is None or doc and have.startswith("in "):
            entry[typ] = doc or f"in {layout.name}"
        elif not doc and have.startswith("in ") and layout.name not in have.split(", "):
            entry[typ] = have + ", " + layout.name

    for f in layout.fields:
        if isinstance(f, Field):
            if f.display == "padding":
                continue
            add(f.name, _int_type(f), f.doc)
            if f.display == "enum":
                add(f.name + "_name", "str", f"name of {f.name}")
            elif f.display in ("virtio_features", "protocol_features", "status"):
                add(f.name + "_names", "list", f"names of the bits set in {f.name}")
            elif f.display == "vring_base":
                for sub in VRING_BASE_KEYS:
                    add(sub, "int", "ring base split (packed rings: wrap counters)")
            for sub, mask in f.bitfields:
                add(sub, "bool" if mask & (mask - 1) == 0 else "int", f"bits of {f.name}")
        elif isinstance(f, Array):
            add(f.name, "list", f"array of {f.item.name} items")
            _layout_fields(f.item, f"{prefix}{f.name}.", out)  # tables are static: bounded
        elif isinstance(f, Tail):
            add(f.name, "str", "trailing bytes, hex")


def _payload_table() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for lay in ALL_LAYOUTS:
        _layout_fields(lay, "", out)
    out.setdefault("data", {"str": "payload of an unknown request, hex"})
    for header in HEADERS.values():
        _layout_fields(header, "chains.header.", out)
    for where, keys in (("ring", RING_KEYS), ("notify", NOTIFY_KEYS)):
        for path, (typ, meaning) in keys.items():
            entry = out.setdefault(path, {})
            have = entry.get(typ)
            entry[typ] = f"{where}: {meaning}" if have is None else f"{have}; {where}: {meaning}"
    for key in EVENT_KEYS:
        out.setdefault(key, {}).setdefault("str", "event field")
    for key, typ in FIRING_NOTE_KEYS.items():  # (hex strings are strings to a filter)
        entry = out.setdefault(key, {})
        entry.setdefault(
            "str" if typ == "hex" else typ, "note of a rule, an addon or the intercept"
        )
    return out


#: payload.<path> -> {type: where it comes from}; paths like ``regions.memory_size``.
PAYLOAD: dict[str, dict[str, str]] = _payload_table()
_INDEX = re.compile(r"\.\d+(?=\.|$)")


def without_index(path: str) -> str:
    """``payload.regions.0.memory_size`` -> ``payload.regions.memory_size``: the field of
    every item of an array, the way a filter names it."""
    return _INDEX.sub("", path)


def payload_types(path: str) -> set[str] | None:
    """The types ``payload.<path>`` can have; None when no layout has such a field.

    Numeric parts select one array item (``regions.0.memory_size``); the array
    itself (``regions``) compares against any of its items.
    """
    entry = PAYLOAD.get(without_index(path))
    return set(entry) if entry is not None else None


def rows() -> list[tuple[str, str, str, str]]:
    """(name, type, meaning, aliases) for every field, payload fields included."""
    out = [(f.name, f.type, f.meaning, ", ".join(f.aliases)) for f in FIELDS]
    for path in sorted(PAYLOAD):
        types = PAYLOAD[path]
        out.append(
            (
                f"payload.{path}",
                "|".join(sorted(types)),
                _clip("; ".join(sorted(set(types.values())))),
                "",
            )
        )
    return out


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def completions(prefix: str) -> list[str]:
    """Field names (and aliases, payload paths) that start with ``prefix``, for the TUI."""
    names = [f.name for f in FIELDS] + [f"payload.{p}" for p in sorted(PAYLOAD)] + list(ALIASES)
    return [n for n in names if n.startswith(prefix)]


def markdown_table() -> str:
    """The README's field table (top-level fields; payload fields: layouts, ring/notify keys)."""
    lines = ["| name | type | meaning | old names (filter only) |", "|---|---|---|---|"]
    for f in FIELDS:
        lines.append(
            f"| `{f.name}` | {f.type} | {f.meaning} | {', '.join(f'`{a}`' for a in f.aliases)} |"
        )
    lines.append(
        "| `payload.<name>` | per layout | decoded payload fields, e.g. `payload.num`, "
        "`payload.regions.memory_size`; ring/notify frames: their JSON keys, e.g. "
        "`payload.in_flight`, `payload.signal` (`vuinspect fields` lists all) | |"
    )
    return "\n".join(lines)


# -- `vuinspect fields` ------------------------------------------------------------------------


def configure(p: argparse.ArgumentParser) -> None:
    """Every field name, its type and meaning, one per line (tab separated), as tshark -G fields."""
    p.description = (
        "List every name usable in filters, -T fields -e NAME and NDJSON, with its "
        "type and meaning\n(tab separated, like tshark -G fields).\n\nexamples:\n"
        "  vuinspect fields\n  vuinspect fields payload.\n"
        "  vuinspect fields --markdown"
    )
    p.add_argument("prefix", nargs="?", default="", help="only names starting with this")
    p.add_argument("--markdown", action="store_true", help="the README table")


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    for name, typ, meaning, aliases in rows():
        if name.startswith(args.prefix):
            extra = f"\taliases: {aliases}" if aliases else ""
            print(f"{name}\t{typ}\t{meaning}{extra}")
    return 0
