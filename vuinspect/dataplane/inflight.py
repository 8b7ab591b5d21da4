"""In-flight requests: descriptor chains of the heads still owed, and ring corruption.

Everything here reads guest memory through ``GuestMemory`` and never raises on
its contents: each walk is bounded by the queue size (a chain may not be
longer, virtio 2.7.5.3.1) and by a total budget, detects loops with a visited
set (no recursion: an indirect table is walked in the same loop), and turns a
failed read into a problem on the chain.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .headers import HEADERS, decode_header, header_size
from .memory import GuestMemory, GuestMemoryError
from .problems import DataProblem, dp_problem
from .rings import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    RingConfig,
    RingSample,
    flag_names,
    read_avail_entries,
    read_used_elems,
    u16,
)

MAX_DESCS = 8192  # descriptors read per in_flight_chains call, whatever the ring says


@dataclass(frozen=True, slots=True)
class Desc:
    """One descriptor as read; ``index`` is its slot in the ring or indirect table."""

    index: int
    addr: int
    len: int
    flags: int
    next: int  # split: next; packed: buffer id
    indirect_table: bool = False  # read from an indirect table

    @property
    def flag_names(self) -> list[str]:
        return flag_names(self.flags)

    @property
    def write(self) -> bool:
        return bool(self.flags & DESC_F_WRITE)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "addr": self.addr,
            "len": self.len,
            "flags": self.flags,
            "flag_names": self.flag_names,
            "next": self.next,
            "indirect_table": self.indirect_table,
        }


@dataclass(slots=True)
class Chain:
    """The descriptor chain of one head, its request header, and what is wrong with it."""

    head: int
    descs: list[Desc] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)
    header: dict[str, Any] | None = None
    truncated: bool = False  # the walk budget ran out before the chain ended

    @property
    def readable(self) -> int:
        return sum(d.len for d in self.descs if not d.write and not d.flags & DESC_F_INDIRECT)

    @property
    def writable(self) -> int:
        return sum(d.len for d in self.descs if d.write and not d.flags & DESC_F_INDIRECT)

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "descs": [d.to_json() for d in self.descs],
            "problems": [p.to_json() for p in self.problems],
            "header": self.header,
            "truncated": self.truncated,
            "readable": self.readable,
            "writable": self.writable,
        }


def _finish(mem: GuestMemory, chain: Chain, device: str | None, order: str = "<") -> Chain:
    """Check every buffer lies in guest memory; decode the header of the first one."""
    first = True
    for d in chain.descs:
        if d.flags & DESC_F_INDIRECT:
            continue
        try:
            mem.translate(d.addr, d.len, mem.buffer_space)
        except GuestMemoryError as e:
            chain.problems.append(dp_problem(e.code, f"head {chain.head} desc {d.index}: {e.text}"))
            first = False
            continue
        if first and device in HEADERS:
            want = min(d.len, header_size(HEADERS[device]))
            try:
                chain.header = decode_header(device, mem.read_buffer(d.addr, want), order)
            except GuestMemoryError as e:  # pragma: no cover - translate said it was there
                chain.problems.append(e.problem)
        first = False
    return chain


def walk_split(
    mem: GuestMemory,
    cfg: RingConfig,
    head: int,
    device: str | None = None,
    budget: list[int] | None = None,
) -> Chain:
    """The chain from ``head`` in a split ring's descriptor table (indirect tables followed)."""
    chain = Chain(head)
    budget = budget if budget is not None else [cfg.num + 1]
    if not 0 <= head < cfg.num:
        chain.problems.append(dp_problem("ring_bad_head", f"head {head} outside 0..{cfg.num - 1}"))
        return chain
    table, size, indirect = cfg.desc, cfg.num, False
    visited: set[tuple[bool, int]] = set()
    i = head
    while True:
        if len(chain.descs) - indirect >= cfg.num:  # the indirect descriptor is no buffer
            chain.problems.append(
                dp_problem("desc_chain_too_long", f"head {head}: more than {cfg.num} descriptors")
            )
            break
        if budget[0] <= 0:
            chain.truncated = True
            break
        if (indirect, i) in visited:
            chain.problems.append(dp_problem("desc_loop", f"head {head}: descriptor {i} again"))
            break
        visited.add((indirect, i))
        budget[0] -= 1
        try:
            raw = (mem.read_buffer if indirect else mem.read_ring)(table + 16 * i, 16)
        except GuestMemoryError as e:
            chain.problems.append(dp_problem(e.code, f"head {head} desc {i}: {e.text}"))
            break
        addr, length, flags, nxt = cfg.wire.desc.unpack(raw)
        chain.descs.append(Desc(i, addr, length, flags, nxt, indirect))
        if flags & DESC_F_INDIRECT:
            why = (
                "an indirect table inside an indirect table"
                if indirect
                else "INDIRECT with NEXT"
                if flags & DESC_F_NEXT
                else f"table length {length} is not a non-zero multiple of 16"
                if length == 0 or length % 16
                else ""
            )
            if why:
                chain.problems.append(dp_problem("desc_bad_indirect", f"head {head}: {why}"))
                break
            table, size, indirect, i = addr, length // 16, True, 0
            continue
        if not flags & DESC_F_NEXT:
            break
        if nxt >= size:
            chain.problems.append(
                dp_problem(
                    "desc_bad_next", f"head {head} desc {i}: next {nxt} outside 0..{size - 1}"
                )
            )
            break
        i = nxt
    return _finish(mem, chain, device, cfg.wire.order)


def walk_packed(
    mem: GuestMemory,
    cfg: RingConfig,
    pos: int,
    device: str | None = None,
    budget: list[int] | None = None,
) -> Chain:
    """The chain starting at ring position ``pos`` of a packed ring (wraps at num)."""
    chain = Chain(pos)
    budget = budget if budget is not None else [cfg.num + 1]
    if not 0 <= pos < cfg.num:
        chain.problems.append(
            dp_problem("ring_bad_head", f"position {pos} outside 0..{cfg.num - 1}")
        )
        return chain
    p, steps = pos, 0
    while True:
        if budget[0] <= 0:
            chain.truncated = True
            break
        if steps >= cfg.num:
            chain.problems.append(
                dp_problem(
                    "desc_chain_too_long", f"chain at {pos}: NEXT on all {cfg.num} descriptors"
                )
            )
            break
        budget[0] -= 1
        steps += 1
        try:
            addr, length, ident, flags = cfg.wire.desc.unpack(mem.read_ring(cfg.desc + 16 * p, 16))
        except GuestMemoryError as e:
            chain.problems.append(dp_problem(e.code, f"chain at {pos} desc {p}: {e.text}"))
            break
        chain.descs.append(Desc(p, addr, length, flags, ident))
        if flags & DESC_F_INDIRECT:
            if length == 0 or length % 16 or flags & DESC_F_NEXT:
                chain.problems.append(
                    dp_problem(
                        "desc_bad_indirect",
                        f"chain at {pos}: indirect length {length}, "
                        f"flags {'|'.join(flag_names(flags))}",
                    )
                )
                break
            _walk_packed_table(mem, cfg, chain, addr, length // 16, budget)
            break
        if not flags & DESC_F_NEXT:
            break
        p = (p + 1) % cfg.num
    return _finish(mem, chain, device, cfg.wire.order)


def _walk_packed_table(
    mem: GuestMemory, cfg: RingConfig, chain: Chain, table: int, n: int, budget: list[int]
) -> None:
    """A packed indirect table: ``n`` descriptors used in order (NEXT is ignored)."""
    if n > cfg.num:
        chain.problems.append(
            dp_problem(
                "desc_chain_too_long", f"chain at {chain.head}: indirect table of {n} > {cfg.num}"
            )
        )
        n = cfg.num
    for i in range(n):
        if budget[0] <= 0:
            chain.truncated = True
            return
        budget[0] -= 1
        try:
            addr, length, ident, flags = cfg.wire.desc.unpack(mem.read_buffer(table + 16 * i, 16))
        except GuestMemoryError as e:
            chain.problems.append(
                dp_problem(e.code, f"chain at {chain.head} indirect {i}: {e.text}")
            )
            return
        if flags & DESC_F_INDIRECT:
            chain.problems.append(
                dp_problem("desc_bad_indirect", f"chain at {chain.head}: indirect inside indirect")
            )
            return
        chain.descs.append(Desc(i, addr, length, flags, ident, True))


def in_flight_chains(
    mem: GuestMemory,
    cfg: RingConfig,
    sample: RingSample,
    device: str | None = None,
    max_chains: int | None = None,
    max_descs: int = MAX_DESCS,
    tracker: SplitTracker | None = None,
) -> list[Chain]:
    """Chains of the requests in flight in ``sample``.

    Split: the heads a ``tracker`` that followed the ring knows are
    outstanding, else the heads in avail slots used_idx .. avail_idx-1
    (exactly the in-flight ones when the device completes in order).  Packed:
    the chains from the used position to the avail position.  At most
    ``max_chains`` chains and ``max_descs`` descriptors in all.
    """
    if not sample.ok or not cfg.valid:
        return []
    budget = [max_descs]
    count = min(sample.in_flight, cfg.num, max_chains if max_chains is not None else cfg.num)
    chains: list[Chain] = []
    if not cfg.packed:
        try:
            if tracker is not None and tracker.last == sample:
                heads = sorted(tracker.outstanding.elements())[:count]
            else:
                heads = read_avail_entries(mem, cfg, sample.used_idx, count)
        except GuestMemoryError as e:
            return [Chain(-1, problems=[e.problem])]
        for h in heads:
            if budget[0] <= 0:
                break
            chains.append(walk_split(mem, cfg, h, device, budget))
        return chains
    pos = sample.used_pos or 0
    slots = sample.in_flight
    while slots > 0 and len(chains) < count and budget[0] > 0:
        chain = walk_packed(mem, cfg, pos, device, budget)
        chains.append(chain)
        ring_slots = max(1, sum(not d.indirect_table for d in chain.descs))
        slots -= ring_slots
        pos = (pos + ring_slots) % cfg.num
    return chains


class SplitTracker:
    """Follows the heads a split ring made available, to catch used ids that were not.

    ``update`` reads the avail entries and used elements added since the last
    sample.  After a (re)sync an unknown id is accepted once (it may have been
    made available before we looked); an id seen since then that comes back
    used without being made available again is ``used_id_not_available``.
    """

    def __init__(self) -> None:
        self.last: RingSample | None = None
        self.outstanding: Counter[int] = Counter()
        self.seen: set[int] = set()

    def _sync(self, mem: GuestMemory, cfg: RingConfig, s: RingSample) -> None:
        self.outstanding = Counter(read_avail_entries(mem, cfg, s.used_idx, s.in_flight))
        self.seen = set(self.outstanding)
        self.last = s

    def update(self, mem: GuestMemory, cfg: RingConfig, s: RingSample) -> list[DataProblem]:
        if not s.ok or not cfg.valid or cfg.packed:
            self.last = None
            return []
        last = self.last
        try:
            if last is None or last.vring != s.vring or last.num != s.num:
                self._sync(mem, cfg, s)
                return []
            adv_a, adv_u = u16(s.avail_idx - last.avail_idx), u16(s.used_idx - last.used_idx)
            if adv_a > cfg.num or adv_u > cfg.num or s.in_flight > cfg.num or cfg.in_order:
                # moved too far between samples to follow; or IN_ORDER, where the device
                # may write one used element per batch: the outstanding heads are exactly
                # the avail slots from the used index on, and ids cannot be checked
                self._sync(mem, cfg, s)
                return []
            problems = []
            for h in read_avail_entries(mem, cfg, last.avail_idx, adv_a):
                self.outstanding[h] += 1
                self.seen.add(h)
            for ident, _ in read_used_elems(mem, cfg, last.used_idx, adv_u):
                if ident >= cfg.num:
                    problems.append(
                        dp_problem(
                            "ring_bad_head",
                            f"vring {cfg.index}: used id {ident} outside 0..{cfg.num - 1}",
                        )
                    )
                elif self.outstanding[ident] > 0:
                    self.outstanding[ident] -= 1
                elif ident in self.seen:
                    problems.append(
                        dp_problem(
                            "used_id_not_available",
                            f"vring {cfg.index}: used id {ident} was not available",
                        )
                    )
                else:
                    self.seen.add(ident)
            self.outstanding += Counter()  # drop zero counts
            self.last = s
            return problems
        except GuestMemoryError as e:
            self.last = None
            return [e.problem]
