"""Proxy rules (``vuinspect proxy --rule/--rules``): an action and a filter, one per line.

    delay 2s: name == GET_VRING_BASE
    drop once: name == SET_VRING_CALL and payload.index == 1
    reply-error: name == GET_CONFIG
    mask-features VIRTIO_RING_F_EVENT_IDX
    disconnect: name == SET_VRING_ENABLE
    corrupt 0=0xff 4^=0x01 count=3: name == SET_VRING_NUM

The filter is the language of ``read --filter`` (:mod:`vuinspect.filter`), matched
against messages decoded by the one decoder (:class:`vuinspect.pipeline.Pipeline`,
one per connection).  This module parses and judges; the relay (proxy/relay.py)
does what the verdict says with the sockets.  docs/rules.md is the user's text.

Cost: with no rules the relay never calls in here.  A rule whose filter has a
top-level ``name == X`` (or ``request == X``) term only decodes messages with
that request code; other messages cost a header read.  Any other filter decodes
every message of the connection.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .filter import FilterError, _tokens, compile_filter, first_match, suggest
from .frames import Channel, Direction, Frame
from .framing import HOST_HEADER
from .holds import Intercept
from .pipeline import Pipeline
from .protocol import features as FEAT
from .protocol.failures import failure_payload
from .protocol.requests import FLAG_REPLY, FLAG_VERSION_MASK, HEADER_SIZE, by_name, lookup
from .protocol.requests import FrontendRequest as FE
from .units import parse_duration
from .verdict import MAX_DELAY_S, Verdict, firing_note

ACTIONS = ("delay", "drop", "reply-error", "mask-features", "disconnect", "corrupt")
#: Largest count=N.
MAX_COUNT = 10**9
#: Payload offsets a corrupt rule may name (the proxy's largest message).
MAX_OFFSET = 1 << 20
#: Rules in one run (each is checked for every message it might match).
MAX_RULES = 256
_EDIT = re.compile(r"(0x[0-9a-fA-F]+|\d+)(\^?=)(0x[0-9a-fA-F]+|\d+)$")
_HEAD = re.compile(r"\S+")
_U64 = struct.Struct("=Q")
# Requests whose u64 payload is a feature set: (channel main) id -> (kind, is the GET reply).
_FEATURE_MSGS: dict[int, tuple[str, bool]] = {
    FE.GET_FEATURES: ("virtio", True),
    FE.SET_FEATURES: ("virtio", False),
    FE.GET_PROTOCOL_FEATURES: ("protocol", True),
    FE.SET_PROTOCOL_FEATURES: ("protocol", False),
}
_DEVICE_PREFIX = {"SND": "sound"}


class RuleError(ValueError):
    """A rule that does not parse; ``position`` is the offending character of the rule."""

    def __init__(self, message: str, position: int, where: str = "") -> None:
        self.message = message
        self.position = position
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{message} (at character {position + 1})")


@dataclass
class Rule:
    """One parsed rule; ``fired`` counts its firings over the whole run."""

    text: str
    action: str
    filter_text: str = ""
    match: Callable[..., bool] | None = None
    #: Request keys (channel, id) the filter can match; None: any message.
    names: frozenset[tuple[str, int]] | None = None
    delay_s: float = 0.0
    virtio_mask: int = 0
    protocol_mask: int = 0
    edits: list[tuple[int, str, int]] = field(default_factory=list)
    limit: int | None = None
    fired: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> bool:
        """Count one firing, unless the rule's count=N/once is used up."""
        with self._lock:
            if self.limit is not None and self.fired >= self.limit:
                return False
            self.fired += 1
            return True


def _duration(text: str, pos: int) -> float:
    value = parse_duration(text)
    if value is None:
        raise RuleError(f"not a duration: {text!r} (e.g. 2s, 500ms, 100us)", pos)
    if value > MAX_DELAY_S:
        raise RuleError(f"delay {text} is longer than {MAX_DELAY_S:g} s", pos)
    return value


def feature_bit(name: str) -> tuple[str, int]:
    """("virtio"|"protocol", bit) of a feature name, with or without its spec prefix.

    ``VIRTIO_RING_F_EVENT_IDX``, ``RING_EVENT_IDX``, ``VHOST_USER_PROTOCOL_F_MQ``,
    ``VIRTIO_BLK_F_FLUSH``, ``BIT_29`` (a virtio bit by number).  Raises ValueError.
    """
    key = name.upper()
    transport = FEAT.TRANSPORT_BY_NAME
    if (m := re.fullmatch(r"(?:VIRTIO_)?BIT_(\d+)", key)) and int(m.group(1)) < 64:
        return "virtio", int(m.group(1))
    if key.startswith("VHOST_USER_PROTOCOL_F_"):
        bit = FEAT.PROTOCOL_BY_NAME.get(key[22:])
        if bit is None:
            raise ValueError(
                f"unknown protocol feature {name!r}{suggest(key[22:], list(FEAT.PROTOCOL_BY_NAME))}"
            )
        return "protocol", bit.bit
    for prefix in ("VIRTIO_F_", "VHOST_USER_F_", "VHOST_F_"):
        if key.startswith(prefix) and key[len(prefix) :] in transport:
            return "virtio", transport[key[len(prefix) :]]
    if key.startswith("VIRTIO_RING_F_") and "RING_" + key[14:] in transport:
        return "virtio", transport["RING_" + key[14:]]
    if m := re.fullmatch(r"VIRTIO_([A-Z0-9]+)_F_(\w+)", key):
        device = _DEVICE_PREFIX.get(m.group(1), m.group(1).lower())
        bits = {b.name: b.bit for b in FEAT.DEVICE_FEATURES.get(device, ())}
        if m.group(2) in bits:
            return "virtio", bits[m.group(2)]
        raise ValueError(f"unknown feature {name!r}")
    found: set[tuple[str, int]] = set()
    spelled: list[str] = []
    if key in transport:
        found.add(("virtio", transport[key]))
        spelled.append(f"VIRTIO_F_{key}")
    if key in FEAT.PROTOCOL_BY_NAME:
        found.add(("protocol", FEAT.PROTOCOL_BY_NAME[key].bit))
        spelled.append(f"VHOST_USER_PROTOCOL_F_{key}")
    for device, table in FEAT.DEVICE_FEATURES.items():
        for b in table:
            if b.name == key:
                found.add(("virtio", b.bit))
                spelled.append(f"VIRTIO_{device.upper()}_F_{key}")
    if len(found) == 1:
        return found.pop()
    if found:
        raise ValueError(f"{name!r} is ambiguous: say {' or '.join(spelled)}")
    known = list(transport) + list(FEAT.PROTOCOL_BY_NAME)
    raise ValueError(f"unknown feature {name!r}{suggest(key, known)}")


def request_keys(filter_text: str) -> frozenset[tuple[str, int]] | None:
    """Requests a filter can only match, from a top-level ``name == X`` term; else None.

    Only ``and`` at the top level keeps the bound (an ``or`` or a ``not`` before
    the term loses it); parenthesised parts are not looked into.
    """
    toks = _tokens(filter_text)
    depth = 0
    keys: frozenset[tuple[str, int]] | None = None
    for i, (kind, value, _) in enumerate(toks):
        if kind == "paren":
            depth += 1 if value == "(" else -1
            continue
        if depth:
            continue
        if kind == "op" and value == "or":
            return None
        if (
            kind == "word"
            and value.removeprefix("vhost_user.") in ("name", "request")
            and i + 2 < len(toks)
            and toks[i + 1][:2] == ("op", "==")
            and toks[i + 2][0] in ("word", "str")
            and not (i and toks[i - 1][:2] == ("op", "not"))
        ):
            spec = by_name(toks[i + 2][1])
            if spec is not None:
                keys = frozenset({(spec.channel, spec.id)})
    return keys


def parse_rule(text: str, where: str = "") -> Rule:
    """Parse one rule; raises RuleError with the position of what is wrong."""
    head, colon, filt = text.partition(":")
    words = [(m.group(), m.start()) for m in _HEAD.finditer(head)]
    if not words:
        raise RuleError("empty rule: expected an action (" + ", ".join(ACTIONS) + ")", 0, where)
    action, apos = words[0]
    if action not in ACTIONS:
        raise RuleError(f"unknown action {action!r}{suggest(action, list(ACTIONS))}", apos, where)
    rule = Rule(text=text.strip(), action=action)
    try:
        for word, pos in words[1:]:
            if word == "once":
                rule.limit = 1
            elif word.startswith("count="):
                n = word[6:]
                if not n.isdigit() or not 1 <= int(n) <= MAX_COUNT:
                    raise RuleError(f"count needs a number from 1 to {MAX_COUNT}: {word!r}", pos)
                rule.limit = int(n)
            elif action == "delay" and not rule.delay_s:
                rule.delay_s = _duration(word, pos)
            elif action == "corrupt":
                m = _EDIT.match(word)
                if not m:
                    raise RuleError(f"expected OFFSET=BYTE or OFFSET^=BYTE, not {word!r}", pos)
                off, byte = int(m.group(1), 0), int(m.group(3), 0)
                if off >= MAX_OFFSET or byte > 255:
                    raise RuleError(f"offset below {MAX_OFFSET} and byte 0-255: {word!r}", pos)
                rule.edits.append((off, m.group(2), byte))
            elif action == "mask-features":
                try:
                    kind, bit = feature_bit(word)
                except ValueError as exc:
                    raise RuleError(str(exc), pos) from None
                if kind == "virtio":
                    rule.virtio_mask |= 1 << bit
                else:
                    rule.protocol_mask |= 1 << bit
            else:
                raise RuleError(f"{action} takes no argument {word!r}", pos)
        end = len(head)
        if action == "delay" and not rule.delay_s:
            raise RuleError("delay needs a duration (e.g. delay 2s: FILTER)", end)
        if action == "corrupt" and not rule.edits:
            raise RuleError("corrupt needs OFFSET=BYTE edits (payload offsets)", end)
        if action == "mask-features" and not (rule.virtio_mask or rule.protocol_mask):
            raise RuleError("mask-features needs feature names", end)
        if not colon:
            if action != "mask-features":
                raise RuleError(f"{action} needs ': FILTER' (which messages)", end)
            return rule
        start = end + 1
        if not filt.strip():
            raise RuleError("expected a filter after ':'", start + len(filt))
        try:
            rule.match = compile_filter(filt)
            rule.names = request_keys(filt)
        except FilterError as exc:
            raise RuleError(exc.message, start + exc.position) from None
        rule.filter_text = filt.strip()
    except RuleError as exc:
        raise RuleError(exc.message, exc.position, where) from None
    return rule


def parse_rules(texts: list[str], files: list[str] | None = None) -> list[Rule]:
    """``--rule`` texts and ``--rules`` files (one rule a line, ``#`` comments).

    Raises RuleError naming the rule (``--rule 2`` or ``FILE:LINE``) and the
    character; OSError for a file that cannot be read.
    """
    rules = [parse_rule(t, f"--rule {i}") for i, t in enumerate(texts, 1)]
    for path in files or []:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    rules.append(parse_rule(line.rstrip("\n"), f"{path}:{n}"))
                if len(rules) > MAX_RULES:
                    break
    if len(rules) > MAX_RULES:
        raise RuleError(f"more than {MAX_RULES} rules", 0)
    return rules


class RuleSet:
    """The rules of one proxy run; ``for_conn`` makes the per-connection matcher."""

    def __init__(
        self,
        rules: list[Rule],
        device: str | None = None,
        addons: list | None = None,
        report: Callable[[str], None] | None = None,
        intercept: Intercept | None = None,
    ) -> None:
        self.rules = rules
        #: The TUI's interactive intercept (holds.py); None outside the TUI.
        self.intercept = intercept
        self.device = device
        #: Python addons (addons.py, ``--script``): their hooks run after the rules.
        self.addons = addons or []
        self.report = report

    def __bool__(self) -> bool:
        # An intercept with no filter costs nothing: the links judge only while it holds
        # (holds.Intercept.on_change makes them start and stop).
        return bool(self.rules or self.addons or (self.intercept and self.intercept.active))

    def for_conn(self, conn: int, describe: Callable[[int], str]) -> ConnRules:
        return ConnRules(self, conn, describe)

    def summary(self) -> str:
        parts = []
        if self.rules:
            parts.append(
                "rules: " + "; ".join(f"{r.text!r} fired {r.fired} time(s)" for r in self.rules)
            )
        if self.addons:
            parts.append(
                "addons: "
                + "; ".join(
                    f"{a.name} acted {a.actions} time(s), {a.errors} error(s)" for a in self.addons
                )
            )
        if self.intercept is not None and self.intercept.counts["hold"]:
            parts.append(self.intercept.summary())
        return "; ".join(parts)


class ConnRules:
    """The rules on one connection: its own decoder state, shared by its channels' links."""

    def __init__(self, ruleset: RuleSet, conn: int, describe: Callable[[int], str]) -> None:
        self.rules = ruleset.rules
        self.intercept = ruleset.intercept
        self.conn = conn
        self.describe = describe
        self.pipeline = Pipeline(device=ruleset.device, keep_closed=False)
        self._lock = threading.Lock()  # the main and back-end channel links share the decoder
        self._told: set[int] = set()  # rules whose "cannot act" note this connection has had
        filtered = [r for r in self.rules if r.match is not None]
        self.addons = None
        if ruleset.addons:
            from .addons import ConnAddons

            self.addons = ConnAddons(
                ruleset.addons, conn, self.pipeline.session(conn), ruleset.report
            )
        self.decode_all = self.addons is not None or any(r.names is None for r in filtered)
        self.decode_keys = frozenset().union(*(r.names or () for r in filtered))
        # mask-features acts on the undecoded feature messages; every other rule needs the
        # decoded message
        masks = any(r.action == "mask-features" for r in self.rules)
        self.mask_keys = frozenset(("main", r) for r in _FEATURE_MSGS) if masks else frozenset()

    def _decode(
        self, ts: int, channel: Channel, direction: Direction, data: bytes, fds: list[int]
    ) -> list:
        descs = tuple(self.describe(fd) for fd in fds)
        frame = Frame(ts, self.conn, channel, direction, data, descs)
        with self._lock:
            try:
                return self.pipeline.feed(frame)
            except Exception:  # noqa: BLE001 - a decoder bug must not break forwarding
                return []

    def _decodes(self, key: tuple[str, int]) -> bool:
        """Does a message of ``key`` (channel, request) go through the rules' decoder?"""
        icpt = self.intercept
        return (
            self.decode_all
            or key in self.decode_keys
            or (icpt is not None and icpt.match is not None)
        )

    def wants(self, channel: str, req: int) -> bool:
        """Whether :meth:`judge` can act on a message of request ``req`` (the relay sends
        every other one by its fast path, as without rules)."""
        key = (channel, req)
        return key in self.mask_keys or self._decodes(key)

    def judge(
        self, ts: int, channel: Channel, direction: Direction, data: bytes, fds: list[int]
    ) -> Verdict | None:
        """The verdict on one whole message (None: forward it unchanged)."""
        if len(data) < HEADER_SIZE:
            return None
        req, flags, _size = HOST_HEADER.unpack_from(data)
        key = (channel, req)
        msgs = None
        icpt = self.intercept
        holding = icpt is not None and icpt.match is not None
        if self._decodes(key):
            msgs = self._decode(ts, channel, direction, data, fds)
        elif key not in self.mask_keys:
            return None  # no rule names this request (and no addon, no intercept): untouched
        verdict: Verdict | None = None
        cur = data
        for rule in self.rules:
            if rule.action == "mask-features":
                new = self._mask(rule, channel, direction, req, flags, cur)
                if new is None or (rule.match is not None and not _matches(rule, msgs, key)):
                    continue
            elif not _matches(rule, msgs, key):
                continue
            elif rule.action == "reply-error":
                spec = lookup(channel, req)
                body = (
                    None
                    if spec is None or flags & FLAG_REPLY
                    else failure_payload(spec, flags, cur[HEADER_SIZE:])
                )
                if body is None:
                    if id(rule) in self._told:
                        continue
                    self._told.add(id(rule))  # said once per rule and connection
                    verdict = verdict or Verdict(cur)
                    verdict.notes.append(
                        _note(
                            rule,
                            "no failure reply the spec allows for "
                            "this message: forwarded unchanged",
                            cur,
                            cur,
                            direction,
                            fired=False,
                        )
                    )
                    continue
                failure = body  # bytes from here on (None went on above)
                new = None
            elif rule.action == "corrupt":
                new = _corrupt(rule, cur)
            else:
                new = None if rule.action in ("drop", "disconnect") else cur
            if not rule.take():
                continue
            verdict = verdict or Verdict(cur)
            if rule.action == "delay":
                verdict.delay_s += rule.delay_s
                verdict.notes.append(
                    _note(rule, f"delayed {rule.delay_s:g} s", cur, cur, direction)
                )
                continue
            if rule.action == "reply-error":
                hdr = HOST_HEADER.pack(req, (flags & FLAG_VERSION_MASK) | FLAG_REPLY, len(failure))
                verdict.reply = hdr + failure
                what = "answered by the proxy with a failure; the peer never saw it"
            elif rule.action == "drop":
                what = (
                    f"dropped ({len(fds)} fd(s) closed); the peer never saw it"
                    if fds
                    else "dropped; the peer never saw it"
                )
            elif rule.action == "disconnect":
                what = "connection cut by the proxy before this message"
                verdict.end = f"rule {rule.text!r}: connection cut"
            else:
                what = "bytes changed"
            verdict.notes.append(_note(rule, what, cur, new or b"", direction))
            if new is None:
                verdict.data = None
                return verdict
            cur = new
        if verdict is not None:
            verdict.data = cur
        if self.addons is not None:
            verdict = self.addons.judge(msgs, cur, direction, verdict)
        if holding and icpt is not None:
            data_now = cur if verdict is None else verdict.data
            if data_now is not None and (verdict is None or verdict.end is None):
                hold, note = icpt.consider(channel, direction, data_now, msgs)
                if note is not None:
                    verdict = verdict or Verdict(data_now)
                    verdict.notes.append(note)
                    verdict.hold = hold
        return verdict

    def closed(self, channel: str) -> list[dict[str, object]]:
        """The link of ``channel`` ended: connection_close hooks when it is the main one."""
        if self.addons is None or channel != "main":
            return []
        return self.addons.close()

    def _mask(
        self, rule: Rule, channel: str, direction: str, req: int, flags: int, data: bytes
    ) -> bytes | None:
        """The message with the rule's feature bits cleared, or None if it carries none."""
        what = _FEATURE_MSGS.get(req) if channel == "main" else None
        if what is None or len(data) < HEADER_SIZE + 8:
            return None
        kind, is_get = what
        if is_get != bool(flags & FLAG_REPLY) or direction != ("b2f" if is_get else "f2b"):
            return None
        mask = rule.virtio_mask if kind == "virtio" else rule.protocol_mask
        value = _U64.unpack_from(data, HEADER_SIZE)[0]
        if not value & mask:
            return None
        return data[:HEADER_SIZE] + _U64.pack(value & ~mask) + data[HEADER_SIZE + 8 :]

    def sent_by_proxy(self, ts: int, channel: Channel, direction: Direction, data: bytes) -> None:
        """A message the proxy itself sent (a reply-error answer): keeps the decoder's state."""
        if self._decodes((channel, HOST_HEADER.unpack_from(data)[0])):
            self._decode(ts, channel, direction, data, [])


def _matches(rule: Rule, msgs: list | None, key: tuple[str, int]) -> bool:
    if rule.match is None or msgs is None or (rule.names is not None and key not in rule.names):
        return False
    return first_match(rule.match, msgs, "message") is not None


def _corrupt(rule: Rule, data: bytes) -> bytes:
    out = bytearray(data)
    for off, op, byte in rule.edits:
        at = HEADER_SIZE + off
        if at < len(out):
            out[at] = out[at] ^ byte if op == "^=" else byte
    return bytes(out)


def _note(
    rule: Rule, what: str, old: bytes, new: bytes, direction: str, fired: bool = True
) -> dict[str, object]:
    """The info of the note event recorded before the message (docs/capture-format.md)."""
    text = f"rule {rule.text!r}: {what}"
    return firing_note(text, {"rule": rule.text}, rule.action, old, new, direction, fired=fired)
