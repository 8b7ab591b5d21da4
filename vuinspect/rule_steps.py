"""The rule table of protocol/effects.py resolved into one function per request and reply.

A session runs, for each message, the :class:`Steps` of its request: the checks
every request gets from its spec, then the checks and effects its rule lists, in
the table's order (PROTOCOL.md §2-§6).  The table stays the one source (the
generated dissector interprets the same data, ``runtime_effects.lua``); what is
built here from it once per request, on first use, is a chain of closures with
every op, key and condition already looked up, so a message costs one lookup and
one call instead of an interpretation of its entries (issue 16: the decode path
must not be slower than the if/elif code the table replaced).

:func:`table` is what a session binds at construction: the resolved steps of the
table as it is then (a changed table entry, as the tests make, gets new steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from .message import Message
from .protocol import features as F
from .protocol.effects import CONTEXT_FIELDS, RULES, VIRTIO_GATES, Effect, Rule
from .protocol.effects import rule as effect_rule
from .protocol.problems import problem
from .protocol.requests import RequestSpec
from .state import Region, Vring

if TYPE_CHECKING:
    from .session import Session

#: An effect (or a chain of them): (session, message, the paired request of a reply).
Step = Callable[["Session", Message, "Message | None"], None]
#: A vring effect on the vring it acts on.
RingStep = Callable[["Session", Vring, Message], None]
#: A rule's check: (session, request, the check's value).
CheckFn = Callable[["Session", Message, Any], None]

_REPLY_ACK = 1 << 3


@dataclass(frozen=True, slots=True)
class Steps:
    """What a request's messages do to the session, resolved from its spec and rule."""

    spec: RequestSpec
    rule: Rule
    request: Callable[[Session, Message], None]
    reply: Step


class StepTable:
    """The steps of every request, built on first use; bound to one state of the table."""

    __slots__ = ("_rules", "resolved")

    def __init__(self, rules: dict[str, list[Rule]]) -> None:
        self._rules = rules  # the table's entries this was built from
        #: id(spec) -> its steps, once resolved (the specs are the tables' own: they stay)
        self.resolved: dict[int, Steps] = {}

    def get(self, spec: RequestSpec) -> Steps:
        steps = self.resolved.get(id(spec))
        if steps is None:
            steps = self.resolved[id(spec)] = build(spec, effect_rule(spec.channel, spec.id))
        return steps

    def current(self) -> bool:
        """Does the rule table still hold the entries this was built from?"""
        return _snapshot() == self._rules


def _snapshot() -> dict[str, list[Rule]]:
    return {channel: list(rules.values()) for channel, rules in RULES.items()}


_TABLE: StepTable | None = None


def table() -> StepTable:
    """The steps of the rule table as it is now (shared while the table does not change)."""
    global _TABLE
    if _TABLE is None or not _TABLE.current():
        _TABLE = StepTable(_snapshot())
    return _TABLE


# -- building -------------------------------------------------------------------------------
def build(spec: RequestSpec, rule: Rule) -> Steps:
    return Steps(spec, rule, _request_step(spec, rule), _reply_step(spec, rule))


def _request_step(spec: RequestSpec, rule: Rule) -> Callable[[Session, Message], None]:
    """Every request's checks from its spec, then its rule's checks, then its effects."""
    fds, role = spec.fds, spec.fd_role
    needs = tuple((name, F.PROTOCOL_BY_NAME[name].bit) for name in spec.needs)
    gates = tuple((name, VIRTIO_GATES[name]) for name in spec.needs_virtio)
    word, gate_problem = rule.virtio, rule.virtio_problem
    ack = spec.reply_mode == "ack"
    checks = tuple((CHECKS[c.kind], c.value) for c in rule.checks)
    effects = compile_effects(rule.request, reply=False)

    def step(s: Session, msg: Message) -> None:
        s._check_fds(msg, fds, role)
        if needs and s.protocol_acked is not None:
            acked = s.protocol_acked
            missing = [name for name, bit in needs if not acked >> bit & 1]
            if missing:
                msg.problems.append(
                    problem(
                        "feature_not_negotiated", f"needs protocol feature {', '.join(missing)}"
                    )
                )
        if gates:
            feats = _virtio_word(s, word)
            for name, bit in gates:
                if feats is not None and not feats >> bit & 1:
                    msg.problems.append(
                        problem(gate_problem)
                        if gate_problem
                        else problem(
                            "feature_not_negotiated", f"needs virtio feature {name} (bit {bit})"
                        )
                    )
        if ack and msg.need_reply and s.protocol_has(_REPLY_ACK) is False:
            msg.problems.append(problem("need_reply_without_ack"))
        for check, value in checks:
            check(s, msg, value)
        if effects is not None:
            effects(s, msg, None)

    return step


def _reply_step(spec: RequestSpec, rule: Rule) -> Step:
    """A reply's fd count and result, then its rule's reply effects."""
    fds, role = spec.reply_fds, spec.reply_fd_role
    effects = compile_effects(rule.reply, reply=True)

    if effects is None:

        def step(s: Session, msg: Message, request: Message | None) -> None:
            s._check_fds(msg, fds, role)
            s._check_result(msg)

        return step

    def step_effects(s: Session, msg: Message, request: Message | None) -> None:
        s._check_fds(msg, fds, role)
        s._check_result(msg)
        effects(s, msg, request)

    return step_effects


def _virtio_word(s: Session, word: str) -> int | None:
    if word == "offered":
        return s.virtio_offered
    if word == "acked_or_offered" and s.virtio_acked is None:
        return s.virtio_offered
    return s.virtio_acked


def compile_effects(effects: Sequence[Effect], *, reply: bool) -> Step | None:
    """One function running ``effects`` in order (None when there are none).

    Effects under the same condition share one test; consecutive vring effects
    share one vring: a request's payload ``index`` (skipped without one), a
    reply's paired request's.
    """
    chain: list[Step] = []
    for when, same in groupby(effects, key=lambda e: e.when):
        body: list[Step] = []
        for on_ring, run in groupby(same, key=lambda e: e.op in VRING_OPS):
            if on_ring:
                body.append(_on_vring([VRING_OPS[e.op](e) for e in run], reply))
            else:
                body.extend(_session_op(e) for e in run)
        joined = _sequence(body)
        assert joined is not None  # (groupby yields no empty group)
        chain.append(_guard(when, joined) if when else joined)
    return _sequence(chain)


def _sequence(steps: list[Step]) -> Step | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def both(s: Session, msg: Message, request: Message | None) -> None:
            first(s, msg, request)
            second(s, msg, request)

        return both
    every = tuple(steps)

    def each(s: Session, msg: Message, request: Message | None) -> None:
        for step in every:
            step(s, msg, request)

    return each


def _guard(when: tuple, body: Step) -> Step:
    """``body`` only when the condition ``when`` holds (effects.py's module docstring)."""
    kind = when[0]
    if kind == "has":
        key = when[1]

        def has(s: Session, msg: Message, request: Message | None) -> None:
            if key in msg.payload:
                body(s, msg, request)

        return has
    if kind == "int":
        key = when[1]

        def is_int(s: Session, msg: Message, request: Message | None) -> None:
            if isinstance(msg.payload.get(key), int):
                body(s, msg, request)

        return is_int
    if kind == "ok":

        def ok(s: Session, msg: Message, request: Message | None) -> None:
            if not msg.payload.get("result"):
                body(s, msg, request)

        return ok
    if kind == "request":

        def paired(s: Session, msg: Message, request: Message | None) -> None:
            if request is not None:
                body(s, msg, request)

        return paired
    if kind == "lacks_virtio":
        bit = when[1]

        def lacks(s: Session, msg: Message, request: Message | None) -> None:
            if s.virtio_acked is not None and not s.virtio_acked >> bit & 1:
                body(s, msg, request)

        return lacks
    raise ValueError(f"unknown effect condition {when!r}")


def _on_vring(ops: list[RingStep | None], reply: bool) -> Step:
    """Run vring effects on the vring they act on (created if new: the ``vring`` op)."""
    run = tuple(op for op in ops if op is not None)
    if reply:

        def of_request(s: Session, msg: Message, request: Message | None) -> None:
            assert request is not None  # a reply's vring effects are all ("request",)
            index = request.payload.get("index", msg.payload.get("index", -1))
            ring = s.vrings.get(index)
            if ring is None:
                ring = s.vring(index)
            for op in run:
                op(s, ring, msg)

        return of_request
    if len(run) == 1:
        (only,) = run

        def of_payload_one(s: Session, msg: Message, request: Message | None) -> None:
            p = msg.payload
            if "index" in p:
                index = p["index"]
                ring = s.vrings.get(index)
                if ring is None:
                    ring = s.vring(index)
                only(s, ring, msg)

        return of_payload_one

    def of_payload(s: Session, msg: Message, request: Message | None) -> None:
        p = msg.payload
        if "index" in p:
            index = p["index"]
            ring = s.vrings.get(index)
            if ring is None:
                ring = s.vring(index)
            for op in run:
                op(s, ring, msg)

    return of_payload


def _session_op(e: Effect) -> Step:
    step = OPS[e.op](e)
    if e.field not in CONTEXT_FIELDS:
        return step

    def renewing(s: Session, msg: Message, request: Message | None) -> None:
        step(s, msg, request)
        s._invalidate()  # the decode context depends on this field

    return renewing


# -- the ops (effects.py's module docstring) -------------------------------------------------
def _set(e: Effect) -> Step:
    field, key = e.field, e.key

    def run(s: Session, msg: Message, request: Message | None) -> None:
        setattr(s, field, msg.payload.get(key))

    return run


def _const(e: Effect) -> Step:
    field, value = e.field, e.value

    def run(s: Session, msg: Message, request: Message | None) -> None:
        setattr(s, field, value)

    return run


def _fd(e: Effect) -> Step:
    field = e.field

    def run(s: Session, msg: Message, request: Message | None) -> None:
        setattr(s, field, msg.fds[0] if msg.fds else None)

    return run


def _with_fd(e: Effect) -> Step:
    field = e.field

    def run(s: Session, msg: Message, request: Message | None) -> None:
        setattr(s, field, dict(msg.payload, fd=msg.fds[0] if msg.fds else None))

    return run


def _guess_device(e: Effect) -> Step:
    key = e.key

    def run(s: Session, msg: Message, request: Message | None) -> None:
        if s.device is None:
            s.device = F.guess_device(msg.payload[key])
            s._invalidate()

    return run


def _region(p: dict[str, Any], fds: tuple[str, ...], i: int) -> Region:
    return Region(
        p["guest_phys_addr"],
        p["memory_size"],
        p["userspace_addr"],
        p["mmap_offset"],
        fds[i] if i < len(fds) else "",
    )


def _regions_set(e: Effect) -> Step:
    key = e.key

    def run(s: Session, msg: Message, request: Message | None) -> None:
        s.regions = [_region(reg, msg.fds, i) for i, reg in enumerate(msg.payload[key])]

    return run


def _region_add(e: Effect) -> Step:
    def run(s: Session, msg: Message, request: Message | None) -> None:
        s.regions.append(_region(msg.payload, msg.fds, 0))

    return run


def _region_remove(e: Effect) -> Step:
    def run(s: Session, msg: Message, request: Message | None) -> None:
        p = msg.payload
        s.regions = [
            g
            for g in s.regions
            if not (
                g.guest_phys_addr == p["guest_phys_addr"]
                and g.memory_size == p["memory_size"]
                and g.userspace_addr == p["userspace_addr"]
            )
        ]

    return run


def _rings_stopped(e: Effect) -> Step:
    every = e.value == "all"

    def run(s: Session, msg: Message, request: Message | None) -> None:
        indices = None if every else [msg.payload["index"]]
        msg.problems.extend(s.rings_stopped(msg.ts_ns, indices))

    return run


def _ring_restart(e: Effect) -> Step:
    def run(s: Session, msg: Message, request: Message | None) -> None:
        if "index" in msg.payload:
            found = s.dataplane.on_restart(msg.ts_ns, msg.payload["index"], s.receive_queue)
            msg.problems.extend(problem(f.code, f.text) for f in found)

    return run


def _vrings_all(e: Effect) -> Step:
    field, value = e.field, e.value

    def run(s: Session, msg: Message, request: Message | None) -> None:
        for ring in s.vrings.values():
            setattr(ring, field, value)

    return run


def _vring(e: Effect) -> RingStep | None:
    return None  # resolving the vring made it


def _vring_set(e: Effect) -> RingStep:
    field, key, how = e.field, e.key, e.value
    if how == "bool":

        def as_bool(s: Session, ring: Vring, msg: Message) -> None:
            setattr(ring, field, bool(msg.payload.get(key)))

        return as_bool
    if how == "bit0":

        def as_bit0(s: Session, ring: Vring, msg: Message) -> None:
            setattr(ring, field, bool((msg.payload.get(key) or 0) & 1))

        return as_bit0

    def as_is(s: Session, ring: Vring, msg: Message) -> None:
        setattr(ring, field, msg.payload.get(key))

    return as_is


def _vring_const(e: Effect) -> RingStep:
    field, value = e.field, e.value

    def run(s: Session, ring: Vring, msg: Message) -> None:
        setattr(ring, field, value)

    return run


def _vring_fd(e: Effect) -> RingStep:
    field, none = e.field, e.value
    call = field == "call"  # what the back-end got (the sampler's call_fd, for old captures)

    def run(s: Session, ring: Vring, msg: Message) -> None:
        nofd = msg.payload.get("nofd")
        fd = None if nofd else (msg.fds[0] if msg.fds else "?")
        setattr(ring, field, fd or none)
        if call:
            sent = "nofd" if nofd else "fd" if msg.fds else "none"
            dropped = s._call_dropped == ring.index
            s.dataplane.call_fd_sent(ring.index, "none" if dropped else sent)
            s._call_dropped = None

    return run


# -- the rule checks (effects.py's module docstring) -----------------------------------------
def _check_vring_started(s: Session, msg: Message, _: Any) -> None:
    if s.seen_start:
        ring = s.vrings.get(msg.payload.get("index", -1))
        if ring is None or not ring.started:
            msg.problems.append(
                problem(
                    "vring_not_started",
                    f"vring {msg.payload.get('index')} was never started (no SET_VRING_KICK)",
                )
            )


def _check_vring_range(s: Session, msg: Message, _: Any) -> None:
    index = msg.payload.get("index")
    if s.queue_num and isinstance(index, int) and index >= 2 * s.queue_num:
        # GET_QUEUE_NUM counts queues or queue pairs depending on the back-end: allow both
        msg.problems.append(
            problem(
                "vring_out_of_range",
                f"vring {index}, back-end announced {s.queue_num} queues",
            )
        )


def _check_max_regions(s: Session, msg: Message, limit: int) -> None:
    if msg.payload.get("nregions", 0) > limit:
        msg.problems.append(
            problem(
                "too_many_regions",
                f"{msg.payload['nregions']} regions, {msg.name} allows {limit}",
            )
        )


def _check_offered(s: Session, msg: Message, how: tuple[str, str]) -> None:
    word, verb = how
    offered = s.virtio_offered if word == "virtio" else s.protocol_offered
    if offered is None:
        return
    extra = msg.payload.get("features", 0) & ~offered
    if extra:
        table = F.virtio_table(s.device) if word == "virtio" else F.PROTOCOL_TABLE
        msg.problems.append(
            problem(
                "features_not_offered",
                f"{verb} {', '.join(F.bit_names(extra, table))} not offered by the back-end",
            )
        )


def _check_slots(s: Session, msg: Message, _: Any) -> None:
    if s.max_mem_slots is not None and len(s.regions) >= s.max_mem_slots:
        msg.problems.append(
            problem(
                "too_many_regions",
                f"{len(s.regions) + 1} regions, back-end has {s.max_mem_slots} slots",
            )
        )


#: Effect op -> the function that resolves one such effect (the interpreters of effects.OPS).
OPS: dict[str, Callable[[Effect], Step]] = {
    "set": _set,
    "const": _const,
    "fd": _fd,
    "with_fd": _with_fd,
    "guess_device": _guess_device,
    "regions_set": _regions_set,
    "region_add": _region_add,
    "region_remove": _region_remove,
    "rings_stopped": _rings_stopped,
    "ring_restart": _ring_restart,
    "vrings_all": _vrings_all,
}
VRING_OPS: dict[str, Callable[[Effect], RingStep | None]] = {
    "vring": _vring,
    "vring_set": _vring_set,
    "vring_const": _vring_const,
    "vring_fd": _vring_fd,
}
CHECKS: dict[str, CheckFn] = {
    "vring_started": _check_vring_started,
    "vring_range": _check_vring_range,
    "max_regions": _check_max_regions,
    "offered": _check_offered,
    "slots": _check_slots,
}
