"""Wireshark field definitions derived from the protocol tables.

Every ``ProtoField`` the Lua dissector registers is described here once, as
data, so that the generator emits it and the tests know which payload key a
``vhost_user.*`` field carries without a hand-kept list.  Names follow the one
vocabulary of vuinspect (``vhost_user.<name>`` = the NDJSON key = the filter
name): ``direction``, ``reply``, ``need_reply``, ``problems``, ``severity``,
``reply_to``, ``reply_in``, ``latency_us`` and ``vhost_user.payload.<name>``
for payload fields (ring and notify frames too: their JSON keys as listed in
``vuinspect.fields.RING_KEYS``/``NOTIFY_KEYS``; event and rule-note keys as well), and
``request`` on both channels; the old names ``response_in``, ``response_to``,
``response_time``, ``is_reply``, ``fd``, ``backend_request``, ``event.<key>``, ``rule``
and ``rule.<key>`` stay as hidden alias fields.  One field is
made per distinct (abbreviation, type, base, value names): Wireshark links
same-named fields, so ``vhost_user.payload.index`` filters every vring index
whatever its width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vuinspect.capture.pseudohdr import KIND_CODES
from vuinspect.fields import EVENT_KEYS, NOTIFY_KEYS, RING_KEYS
from vuinspect.protocol.features import (
    DEVICE_FEATURES,
    DEVICE_STATUS,
    PROTOCOL_FEATURES,
    TRANSPORT_FEATURES,
)
from vuinspect.protocol.layouts import HEX_DISPLAYS, VRING_BASE_KEYS, Array, Field, Layout, Tail
from vuinspect.protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS
from vuinspect.protocol.requests import WIRESHARK_NAME as PROTO
from vuinspect.verdict import FIRING_NOTE_KEYS

_INT_CTORS = {"B": "uint8", "H": "uint16", "I": "uint32", "Q": "uint64", "i": "int32", "q": "int64"}


@dataclass(frozen=True, slots=True)
class LuaField:
    """One ``ProtoField``: enough to emit it and to read it back in tests.

    ``role`` tells a reader of tshark's output what the field holds:
    ``payload`` (the payload key ``key``), ``bits`` (one named bit of the
    ``key``+``_names`` list), ``ignore`` (padding), or ``header``/``event``.
    """

    var: str
    abbrev: str
    label: str
    ctor: str
    base: str = ""
    values: str = ""  # Lua name of a value-string table
    mask: int | None = None
    width: int | None = None  # bool bit width (with mask)
    extra: str = ""  # trailing Lua argument (frametype)
    desc: str = ""
    role: str = "header"
    key: str = ""


@dataclass
class Registry:
    """Ordered ProtoFields and value-string tables, deduplicated by signature."""

    fields: dict[str, LuaField] = field(default_factory=dict)
    value_strings: dict[str, dict[int, str]] = field(default_factory=dict)
    _by_sig: dict[tuple, str] = field(default_factory=dict)
    _vs_by_items: dict[tuple, str] = field(default_factory=dict)
    #: ring/notify kind -> [(JSON key, ProtoField var, constructor)] (the Lua C.DATAPLANE)
    dataplane: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def add(self, f: LuaField, sig: tuple | None = None) -> str:
        if sig is not None and sig in self._by_sig:
            return self._by_sig[sig]
        var = f.var
        n = 2
        while var in self.fields:
            var = f"{f.var}_{n}"
            n += 1
        if var != f.var:
            f = LuaField(**{**_asdict(f), "var": var})
        self.fields[var] = f
        if sig is not None:
            self._by_sig[sig] = var
        return var

    def value_string(self, hint: str, values: dict[int, str]) -> str:
        items = tuple(sorted(values.items()))
        name = self._vs_by_items.get(items)
        if name is None:
            name = hint
            n = 2
            while name in self.value_strings:
                name = f"{hint}_{n}"
                n += 1
            self.value_strings[name] = dict(items)
            self._vs_by_items[items] = name
        return name

    def by_abbrev(self) -> dict[str, list[LuaField]]:
        out: dict[str, list[LuaField]] = {}
        for f in self.fields.values():
            out.setdefault(f.abbrev, []).append(f)
        return out


def _asdict(f: LuaField) -> dict:
    return {k: getattr(f, k) for k in LuaField.__slots__}


def label_of(name: str) -> str:
    """``guest_phys_addr`` -> ``Guest phys addr``."""
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def payload_abbrev(name: str) -> str:
    return f"{PROTO}.payload.{name}"


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


# -- fixed fields: pseudo-header, header, links, events ------------------------------------


def _fixed(reg: Registry) -> None:
    P = PROTO
    reg.value_strings.update(
        {
            "channel": {0: "main", 1: "backend"},
            "direction": {0: "f2b", 1: "b2f"},
            "kind": {code: name for name, code in KIND_CODES.items()},
        }
    )
    for var, abbrev, label, ctor, base, values in (
        ("pseudo", f"{P}.pseudo", "vuinspect pseudo-header", "none", "", ""),
        ("ph_version", f"{P}.pseudo.version", "Version", "uint8", "base.DEC", ""),
        ("ph_hdr_len", f"{P}.pseudo.hdr_len", "Header length", "uint16", "base.DEC", ""),
        ("ph_flags", f"{P}.pseudo.flags", "Flags", "uint8", "base.HEX", ""),
        ("conn", f"{P}.conn", "Connection", "uint32", "base.DEC", ""),
        ("channel", f"{P}.channel", "Channel", "uint8", "base.DEC", "channel"),
        ("direction", f"{P}.direction", "Direction", "uint8", "base.DEC", "direction"),
        ("kind", f"{P}.kind", "Kind", "uint8", "base.DEC", "kind"),
        ("fd_count", f"{P}.fd_count", "Number of fds", "uint8", "base.DEC", ""),
        ("ph_fd", f"{P}.pseudo.fd", "fd description", "string", "", ""),
        ("fds", f"{P}.fds", "fd", "string", "", ""),
        ("fd", f"{P}.fd", "fd (old name of vhost_user.fds)", "string", "", ""),
        ("request", f"{P}.request", "Request", "uint32", "base.DEC", "main_names"),
        ("request_backend", f"{P}.request", "Request", "uint32", "base.DEC", "backend_names"),
        (
            "backend_request",
            f"{P}.backend_request",
            "Back-end request (old name of vhost_user.request)",
            "uint32",
            "base.DEC",
            "backend_names",
        ),
        ("name", f"{P}.name", "Name", "string", "", ""),
        ("size", f"{P}.size", "Payload size", "uint32", "base.DEC", ""),
        ("reply", f"{P}.reply", "Reply (by direction)", "bool", "", ""),
        ("is_reply", f"{P}.is_reply", "Reply (old name of vhost_user.reply)", "bool", "", ""),
        ("need_reply", f"{P}.need_reply", "Need reply (only when set)", "bool", "", ""),
        ("problems", f"{P}.problems", "Problem", "string", "", ""),
        ("severity", f"{P}.severity", "Severity (highest of the problems)", "string", "", ""),
        ("layout", f"{P}.layout", "Payload layout", "string", "", ""),
        ("raw", f"{P}.raw", "Unframed bytes", "bytes", "", ""),
        (
            "partial",
            f"{P}.partial",
            "Bytes of a message continued in a later frame",
            "bytes",
            "",
            "",
        ),
        ("event_json", f"{P}.event.json", "Event", "string", "", ""),
    ):
        reg.add(LuaField(var, abbrev, label, ctor, base, values))
    reg.add(
        LuaField(
            "ph_big_endian",
            f"{P}.pseudo.big_endian",
            "Big-endian messages",
            "bool",
            mask=0x1,
            width=8,
        )
    )
    reg.add(LuaField("flags", f"{P}.flags", "Flags", "uint32", "base.HEX"))
    reg.add(
        LuaField("flags_version", f"{P}.flags.version", "Version", "uint32", "base.DEC", mask=0x3)
    )
    reg.add(LuaField("flags_reply", f"{P}.flags.reply", "Reply", "bool", mask=0x4, width=32))
    reg.add(
        LuaField(
            "flags_need_reply", f"{P}.flags.need_reply", "Need reply", "bool", mask=0x8, width=32
        )
    )
    reg.add(
        LuaField(
            "flags_reserved",
            f"{P}.flags.reserved",
            "Reserved",
            "uint32",
            "base.HEX",
            mask=0xFFFFFFF0,
        )
    )
    reg.add(
        LuaField(
            "reply_in",
            f"{P}.reply_in",
            "Reply in",
            "framenum",
            "base.NONE",
            extra="frametype.RESPONSE",
        )
    )
    reg.add(
        LuaField(
            "reply_to",
            f"{P}.reply_to",
            "Reply to",
            "framenum",
            "base.NONE",
            extra="frametype.REQUEST",
        )
    )
    reg.add(LuaField("latency_us", f"{P}.latency_us", "Latency (µs)", "double"))
    reg.add(
        LuaField(
            "response_in",
            f"{P}.response_in",
            "Reply in (old name)",
            "framenum",
            "base.NONE",
            extra="frametype.RESPONSE",
        )
    )
    reg.add(
        LuaField(
            "response_to",
            f"{P}.response_to",
            "Reply to (old name)",
            "framenum",
            "base.NONE",
            extra="frametype.REQUEST",
        )
    )
    reg.add(LuaField("response_time", f"{P}.response_time", "Latency (old name)", "relative_time"))


def _notes(reg: Registry) -> None:
    """Event and rule-note keys as ``vhost_user.payload.<key>``, the name Python gives them.

    Registered after the payload fields, so a key that is also a payload field's name
    (``direction``, ``error``) reads as that field first.  The old names
    (``vhost_user.event.<key>``, ``vhost_user.rule``, ``vhost_user.rule.<key>``) stay as
    hidden aliases; these are rare frames, so the second item costs nothing that matters.
    """
    P = PROTO
    for key in EVENT_KEYS:
        reg.add(
            LuaField(
                f"ev_{key}", payload_abbrev(key), label_of(key), "string", role="event", key=key
            )
        )
        if key not in _OLD_EVENT_KEYS:
            continue
        reg.add(
            LuaField(
                f"ev_old_{key}",
                f"{P}.event.{key}",
                f"{label_of(key)} (old name of {payload_abbrev(key)})",
                "string",
                role="alias",
                key=key,
            )
        )
    for key, ctor, label in RULE_KEYS:
        desc = "A proxy rule (or addon) acted on the next message" if key in _NOTE_HEADS else ""
        reg.add(
            LuaField(
                f"note_{key}", payload_abbrev(key), label, ctor, desc=desc, role="rule", key=key
            )
        )
    reg.add(
        LuaField(
            "rule",
            f"{P}.rule",
            "Rule (old name of vhost_user.payload.rule)",
            "string",
            role="alias",
            key="rule",
        )
    )
    for key, ctor, label in RULE_KEYS:
        if key in _OLD_RULE_KEYS:
            reg.add(
                LuaField(
                    f"rule_{key}",
                    f"{P}.rule.{key}",
                    f"{label} (old name of {payload_abbrev(key)})",
                    ctor,
                    role="alias",
                    key=key,
                )
            )


#: A rule or addon note's keys (verdict.FIRING_NOTE_KEYS, the one shape of such a note)
#: shown under the one who acted: (key, ProtoField constructor, label); hex becomes bytes.
_NOTE_CTORS = {"str": "string", "hex": "bytes", "float": "double", "bool": "bool", "int": "uint32"}
_NOTE_LABELS = {
    "direction": "Direction of the message",
    "original": "Original message",
    "new": "Message sent on",
    "answer": "Answer sent by the proxy",
    "delay_s": "Delay (s)",
    "fired": "Acted",
    "hold": "Intercept hold",
}
RULE_KEYS = tuple(
    (key, _NOTE_CTORS[typ], _NOTE_LABELS.get(key) or label_of(key))
    for key, typ in FIRING_NOTE_KEYS.items()
)
#: Who acted: the item the note's other keys are shown under (``rule``, else ``addon``).
_NOTE_HEADS = ("rule", "addon")
#: The keys that had a ``vhost_user.event.<key>`` or ``vhost_user.rule.<key>`` before they
#: became payload fields: only an old name gets an alias (a key added since, like the
#: intercept's ``hold``, has its payload name alone).
_OLD_EVENT_KEYS = frozenset(
    {"label", "listen", "connect", "orientation", "device", "byteorder", "reason", "by", "text"}
)
_OLD_RULE_KEYS = frozenset(
    {
        "addon",
        "hook",
        "action",
        "direction",
        "original",
        "new",
        "fired",
        "answer",
        "delay_s",
        "error",
    }
)


# -- payload fields --------------------------------------------------------------------------


def payload_field(reg: Registry, f: Field) -> str:
    """The ProtoField var for a layout Field (created on first use)."""
    abbrev = payload_abbrev(f.name)
    label = label_of(f.name)
    if f.display == "padding":
        return reg.add(
            LuaField(f"pad_{f.name}", abbrev, label, "bytes", role="ignore"), ("bytes", abbrev)
        )
    if f.is_bytes:
        ctor = {"uuid": "guid", "mac": "ether"}.get(f.display, "bytes")
        return reg.add(
            LuaField(f"p_{f.name}", abbrev, label, ctor, desc=f.doc, role="payload", key=f.name),
            (ctor, abbrev),
        )
    ctor = _INT_CTORS[f.fmt]
    base = "base.HEX" if f.display in HEX_DISPLAYS else "base.DEC"
    values = ""
    if f.display == "enum" and f.values:
        values = reg.value_string(f"vs_{f.name}", f.values)
    return reg.add(
        LuaField(
            f"p_{f.name}", abbrev, label, ctor, base, values, desc=f.doc, role="payload", key=f.name
        ),
        (ctor, abbrev, base, values),
    )


def bitfield(reg: Registry, name: str, mask: int) -> str:
    """A value read out of a field by ``mask``: a bool for one bit, else a uint32."""
    abbrev = payload_abbrev(name)
    if mask & (mask - 1) == 0:
        return reg.add(
            LuaField(f"p_{name}", abbrev, label_of(name), "bool", role="payload", key=name),
            ("bool", abbrev),
        )
    return reg.add(
        LuaField(
            f"p_{name}", abbrev, label_of(name), "uint32", "base.DEC", role="payload", key=name
        ),
        ("uint32", abbrev, "base.DEC", ""),
    )


def array_fields(reg: Registry, a: Array) -> tuple[str, str]:
    arr = reg.add(
        LuaField(
            f"a_{a.name}",
            payload_abbrev(a.name),
            label_of(a.name),
            "none",
            role="array",
            key=a.name,
        ),
        ("none", a.name),
    )
    item = reg.add(
        LuaField(
            f"i_{a.item.name}",
            payload_abbrev(a.item.name),
            label_of(a.item.name),
            "none",
            role="item",
            key=a.item.name,
        ),
        ("none", a.item.name),
    )
    return arr, item


def tail_field(reg: Registry, t: Tail) -> str:
    abbrev = payload_abbrev(t.name)
    return reg.add(
        LuaField(f"p_{t.name}", abbrev, label_of(t.name), "bytes", role="payload", key=t.name),
        ("bytes", abbrev),
    )


def _bits(reg: Registry) -> None:
    P = PROTO
    for key in VRING_BASE_KEYS:
        reg.add(
            LuaField(
                f"p_{key}",
                payload_abbrev(key),
                label_of(key),
                "uint32",
                "base.DEC",
                role="payload",
                key=key,
            ),
            ("uint32", payload_abbrev(key), "base.DEC", ""),
        )
    for b in PROTOCOL_FEATURES:
        reg.add(
            LuaField(
                f"fp_{_ident(b.name)}",
                f"{P}.payload.features.protocol.{b.name.lower()}",
                f"{b.name} (bit {b.bit})",
                "bool",
                desc=b.doc,
                role="bits",
                key="features",
            )
        )
    named = {b.bit for b in PROTOCOL_FEATURES}
    for n in range(64):
        if n not in named:
            reg.add(
                LuaField(
                    f"fp_bit{n}",
                    f"{P}.payload.features.protocol.bit{n}",
                    f"BIT_{n}",
                    "bool",
                    role="bits",
                    key="features",
                )
            )
    for b in TRANSPORT_FEATURES:
        reg.add(
            LuaField(
                f"fv_{_ident(b.name)}",
                f"{P}.payload.features.virtio.{b.name.lower()}",
                f"{b.name} (bit {b.bit})",
                "bool",
                desc=b.doc,
                role="bits",
                key="features",
            )
        )
    for device, bits in DEVICE_FEATURES.items():
        for b in bits:
            reg.add(
                LuaField(
                    f"fv_{device}_{_ident(b.name)}",
                    f"{P}.payload.features.virtio.{b.name.lower()}",
                    f"{b.name} (bit {b.bit}, {device})",
                    "bool",
                    desc=b.doc,
                    role="bits",
                    key="features",
                )
            )
    transport = {b.bit for b in TRANSPORT_FEATURES}
    for n in range(64):
        if n not in transport:
            reg.add(
                LuaField(
                    f"fv_bit{n}",
                    f"{P}.payload.features.virtio.bit{n}",
                    f"BIT_{n}",
                    "bool",
                    role="bits",
                    key="features",
                )
            )
    status_named = {b.bit for b in DEVICE_STATUS}
    for b in DEVICE_STATUS:
        reg.add(
            LuaField(
                f"st_{_ident(b.name)}",
                f"{P}.payload.status.{b.name.lower()}",
                f"{b.name} (bit {b.bit})",
                "bool",
                role="bits",
                key="status",
            )
        )
    for n in range(8):
        if n not in status_named:
            reg.add(
                LuaField(
                    f"st_bit{n}",
                    f"{P}.payload.status.bit{n}",
                    f"BIT_{n}",
                    "bool",
                    role="bits",
                    key="status",
                )
            )


# -- data plane: ring and notify frames (their JSON keys, vuinspect.fields) --------------------

_DP_CTORS = {"int": "uint32", "str": "string", "bool": "bool"}


def dataplane_keys() -> dict[str, tuple[tuple[str, str], ...]]:
    """Frame kind -> (key, ProtoField constructor) of its scalar top-level JSON keys.

    Shown as ``vhost_user.payload.<key>``, the name the filter knows them by; times
    in ns (``*_ns``) are uint64, other numbers uint32 (indices are u16, sizes u32).
    """
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for kind, keys in (("ring", RING_KEYS), ("notify", NOTIFY_KEYS)):
        out[kind] = tuple(
            (key, "uint64" if key.endswith("_ns") else _DP_CTORS[typ])
            for key, (typ, _) in keys.items()
            if "." not in key and typ in _DP_CTORS
        )
    return out


def _dataplane(reg: Registry) -> None:
    """Register the data-plane fields; ``reg.dataplane``: kind -> [(key, var, ctor)]."""
    out = reg.dataplane
    for kind, keys in dataplane_keys().items():
        for key, ctor in keys:
            abbrev = payload_abbrev(key)
            base = "base.DEC" if ctor.startswith("uint") else ""
            meaning = (RING_KEYS.get(key) or NOTIFY_KEYS[key])[1]
            var = reg.add(
                LuaField(
                    f"p_{key}",
                    abbrev,
                    label_of(key),
                    ctor,
                    base,
                    desc=meaning,
                    role="payload",
                    key=key,
                ),
                (ctor, abbrev, base, ""),
            )
            out.setdefault(kind, []).append((key, var, ctor))


def all_layouts() -> list[Layout]:
    """Every layout the request tables use, array items before their arrays."""
    out: list[Layout] = []

    def visit(lay: Layout) -> None:
        for f in lay.fields:
            if isinstance(f, Array):
                visit(f.item)
        if lay not in out:
            out.append(lay)

    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS):
        for lay in (*spec.request, *spec.reply):
            visit(lay)
    return out


def build_registry() -> Registry:
    """All fields in emission order: fixed ones, bits, then payload fields by layout."""
    reg = Registry()
    reg.value_strings["main_names"] = {s.id: s.name for s in FRONTEND_REQUESTS}
    reg.value_strings["backend_names"] = {s.id: s.name for s in BACKEND_REQUESTS}
    _fixed(reg)
    _bits(reg)
    reg.add(
        LuaField("p_data", payload_abbrev("data"), "Data", "bytes", role="payload", key="data"),
        ("bytes", payload_abbrev("data")),
    )
    for lay in all_layouts():
        for f in lay.fields:
            if isinstance(f, Field):
                payload_field(reg, f)
                for name, mask in f.bitfields:
                    bitfield(reg, name, mask)
            elif isinstance(f, Array):
                array_fields(reg, f)
            else:
                tail_field(reg, f)
    _dataplane(reg)
    _notes(reg)
    return reg


def abbrev_roles(reg: Registry | None = None) -> dict[str, tuple[str, str]]:
    """abbrev -> (role, key) for readers of tshark output (tests, tools)."""
    reg = reg or build_registry()
    out: dict[str, tuple[str, str]] = {}
    for f in reg.fields.values():
        out.setdefault(f.abbrev, (f.role, f.key))
    return out
