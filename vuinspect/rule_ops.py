"""The ops and checks of the rule table (protocol/effects.py), as the functions steps use.

For each effect op a function that resolves one :class:`~.protocol.effects.Effect`
into a closure with its field, key and value bound (:data:`OPS`, and
:data:`VRING_OPS` for effects on a vring); for each check kind the check
(:data:`CHECKS`); and the checks every request and reply gets from its spec
(fd counts, results).  :mod:`vuinspect.rule_steps` chains them per request.
What each op does: effects.py's module docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .dataplane.memory import MAX_REGIONS
from .dataplane.track import MAX_RINGS
from .message import Message
from .protocol import features as F
from .protocol.effects import Effect
from .protocol.layouts import Layout
from .protocol.problems import problem
from .state import Region, Vring

if TYPE_CHECKING:
    from .session import Session

#: An effect (or a chain of them): (session, message, the paired request of a reply).
Step = Callable[["Session", Message, "Message | None"], None]
#: A vring effect on the vring it acts on.
RingStep = Callable[["Session", Vring, Message], None]
#: A rule's check: (session, request, the check's value).
CheckFn = Callable[["Session", Message, Any], None]

_BACKEND_SEND_FD = F.protocol_mask("BACKEND_SEND_FD")
TRUNCATED_FD = "truncated"  # fd description the proxy adds when the kernel set MSG_CTRUNC


# -- the checks every request and reply gets from its spec ------------------------------------
def fds_required(allowed: tuple[int, int], layouts: tuple[Layout, ...]) -> bool:
    """Can :func:`check_fds` find a problem in a message without fds (an fd is required,
    or the payload says how many)?  Else it need not run on one."""
    lo, hi = allowed
    return lo > 0 or hi == -1 or any(layout.name == "vring_fd" for layout in layouts)


def expected_fds(
    allowed: tuple[int, int], layout: str | None, payload: dict[str, Any]
) -> tuple[int, int]:
    """(fewest, most) fds a message carries: its spec's ``allowed`` as its layout and
    payload narrow it (NOFD, one per region).  The checks and the samples both ask here."""
    if layout == "vring_fd" or layout == "vring_area":
        if payload.get("nofd"):
            return 0, 0
        # the fd is optional when NOFD is clear in a vring area (PROTOCOL.md §3)
        return (0 if layout == "vring_area" else 1), 1
    if layout == "postcopy_ack":
        return 0, 0
    lo, hi = allowed
    if hi == -1:
        n = len(payload.get("regions", ())) if "regions" in payload else 8
        return n, n
    return lo, hi


def check_fds(s: Session, msg: Message, allowed: tuple[int, int], role: str) -> None:
    """The message's fd count against its spec's (or its payload's) and the state."""
    n = 0
    if msg.fds:
        truncated = [d for d in msg.fds if d.startswith(TRUNCATED_FD)]
        if truncated:
            msg.problems.append(problem("fds_truncated", truncated[0]))
        n = len(msg.fds) - len(truncated)
    lo, hi = expected_fds(allowed, msg.layout, msg.payload)
    if n < lo or n > hi:
        want = f"{lo}" if lo == hi else f"{lo}-{hi}"
        what = f" ({role})" if role else ""
        msg.problems.append(problem("fd_count", f"{n} fds, expected {want}{what}"))
    if (
        n
        and msg.channel == "backend"
        and not msg.reply
        and s.protocol_has(_BACKEND_SEND_FD) is False
    ):
        msg.problems.append(problem("fds_without_backend_send_fd"))


def check_result(msg: Message) -> None:
    """A reply's result or error code (PROTOCOL.md §1.5)."""
    p = msg.payload
    if msg.layout == "ack" and p.get("result"):
        msg.problems.append(problem("ack_error", f"result {p['result']}"))
    elif msg.layout == "device_state_result" and p.get("error"):
        msg.problems.append(problem("ack_error", f"error code {p['error']}"))
    elif msg.layout == "config" and msg.size == 0:
        msg.problems.append(problem("ack_error", "empty GET_CONFIG reply means failure"))
    elif msg.layout and msg.layout.startswith("crypto") and p.get("session_id", 0) < 0:
        msg.problems.append(problem("ack_error", f"session_id {p['session_id']}"))


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
        if len(s.regions) < MAX_REGIONS:  # (past it the slots check said "not kept")
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
            found = s.tracked_dataplane().on_restart(
                msg.ts_ns, msg.payload["index"], s.receive_queue
            )
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
            s.tracked_dataplane().call_fd_sent(ring.index, "none" if dropped else sent)
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
    if not isinstance(index, int):
        return
    if s.queue_num and index >= 2 * s.queue_num:
        # GET_QUEUE_NUM counts queues or queue pairs depending on the back-end: allow both
        text = f"vring {index}, back-end announced {s.queue_num} queues"
    elif index >= MAX_RINGS:  # Session.vring keeps no state for it: say so
        text = f"vring {index}, past the {MAX_RINGS} vrings vuinspect follows"
    else:
        return
    msg.problems.append(problem("vring_out_of_range", text))


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
    n = len(s.regions)
    if s.max_mem_slots is not None and n >= s.max_mem_slots:
        text = f"{n + 1} regions, back-end has {s.max_mem_slots} slots"
        msg.problems.append(problem("too_many_regions", text))
    elif n >= MAX_REGIONS:  # a front-end adding ever more must not grow the table
        text = f"past the {MAX_REGIONS} regions vuinspect follows: not kept"
        msg.problems.append(problem("too_many_regions", text))


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
