"""The rule table of protocol/effects.py resolved into one function per request and reply.

A session runs, for each message, the :class:`Steps` of its request: the checks
every request gets from its spec, then the checks and effects its rule lists, in
the table's order (PROTOCOL.md §2-§6).  The table stays the one source (the
generated dissector interprets the same data, ``runtime_effects.lua``); what is
built here from it once per request, on first use, is a chain of closures with
every op, key and condition already looked up, so a message costs one lookup and
one call instead of an interpretation of its entries (issue 16: the decode path
must not be slower than the if/elif code the table replaced).  The ops and checks
the chains are made of: :mod:`vuinspect.rule_ops`.

:func:`table` is what a session binds at construction: the resolved steps of the
table as it is then (a changed table entry, as the tests make, gets new steps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

from .message import Message
from .protocol import features as F
from .protocol.effects import CONTEXT_FIELDS, RULES, VIRTIO_GATES, Effect, Rule
from .protocol.effects import rule as effect_rule
from .protocol.problems import problem
from .protocol.requests import RequestSpec
from .rule_ops import CHECKS, OPS, VRING_OPS, RingStep, Step, check_fds, check_result, fds_required

if TYPE_CHECKING:
    from .session import Session

_REPLY_ACK = F.protocol_mask("REPLY_ACK")


@dataclass(frozen=True, slots=True)
class Steps:
    """What a request's messages do to the session, resolved from its spec and rule."""

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
    return Steps(rule, _request_step(spec, rule), _reply_step(spec, rule))


def _request_step(spec: RequestSpec, rule: Rule) -> Callable[[Session, Message], None]:
    """Every request's checks from its spec, then its rule's checks, then its effects."""
    fds, role = spec.fds, spec.fd_role
    fds_needed = fds_required(fds, spec.request)
    needs = tuple((name, F.PROTOCOL_BY_NAME[name].bit) for name in spec.needs)
    gates = tuple((name, VIRTIO_GATES[name]) for name in spec.needs_virtio)
    word, gate_problem = rule.virtio, rule.virtio_problem
    ack = spec.reply_mode == "ack"
    checks = tuple((CHECKS[c.kind], c.value) for c in rule.checks)
    effects = compile_effects(rule.request, reply=False)

    def step(s: Session, msg: Message) -> None:
        if msg.fds or fds_needed:
            check_fds(s, msg, fds, role)
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
    fds_needed = fds_required(fds, spec.reply)
    effects = compile_effects(rule.reply, reply=True)

    def step(s: Session, msg: Message, request: Message | None) -> None:
        if msg.fds or fds_needed:
            check_fds(s, msg, fds, role)
        check_result(msg)
        if effects is not None:
            effects(s, msg, request)

    return step


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
    """Run vring effects on the vring they act on (created if new: the ``vring`` op; none
    past the session's cap, :meth:`Session.vring`)."""
    run = tuple(op for op in ops if op is not None)
    if reply:

        def of_request(s: Session, msg: Message, request: Message | None) -> None:
            assert request is not None  # a reply's vring effects are all ("request",)
            index = request.payload.get("index", msg.payload.get("index", -1))
            ring = s.vring(index)
            if ring is None:  # past the cap: kept nowhere
                return
            for op in run:
                op(s, ring, msg)

        return of_request

    def of_payload(s: Session, msg: Message, request: Message | None) -> None:
        p = msg.payload
        ring = s.vring(p["index"]) if "index" in p else None
        if ring is not None:  # (none without an index, or past the cap: kept nowhere)
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
