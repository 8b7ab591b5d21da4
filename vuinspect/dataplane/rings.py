"""Ring readers: one sample of a split or packed virtqueue, and what changed between two.

A sample is what a low-rate sampler sees of a vring at one instant (VIRTQUEUE.md
§2-3): split rings give their free-running u16 indices, flags and event
indices; packed rings have no index field, so a ``PackedTracker`` walks the
descriptor flags from the last known positions (at most ``num`` steps per
walk) and counts the slots it passed as u16 counters.  Either way a sample
carries ``avail_idx``/``used_idx`` counters with the same wrap arithmetic, so
in-flight counts and diagnosis are one code for both layouts.

Reading never raises on guest memory contents: a failed read becomes a sample
with ``ok=False`` and a problem.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from ..payload import decode_vring_base
from ..protocol import features as F
from .memory import GuestMemory, GuestMemoryError
from .problems import DataProblem, dp_problem, problem_from_json

Layout = Literal["split", "packed"]

# descriptor flags (split and packed)
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
DESC_F_AVAIL = 1 << 7
DESC_F_USED = 1 << 15
DESC_FLAGS = {
    DESC_F_NEXT: "NEXT",
    DESC_F_WRITE: "WRITE",
    DESC_F_INDIRECT: "INDIRECT",
    DESC_F_AVAIL: "AVAIL",
    DESC_F_USED: "USED",
}
# split ring flags
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
# packed event suppression flags
EVENT_FLAGS = {0: "ENABLE", 1: "DISABLE", 2: "DESC"}
#: What the back-end holds to call the driver with, as the proxy saw SET_VRING_CALL go
#: through: an eventfd, NOFD (bit 8: the front-end polls), or none (no SET_VRING_CALL
#: reached it since the connection began: a rule dropped it, or the front-end never sent it).
CALL_FD_STATES = ("fd", "nofd", "none")
MAX_NUM = 32768  # the largest queue size virtio allows

DESC_STRUCT = struct.Struct("<QIHH")  # split: addr len flags next; packed: addr len id flags


@dataclass(frozen=True, slots=True)
class Wire:
    """A ring's fields in one byte order: little-endian for VERSION_1 devices, the guest's
    own for legacy ones (VIRTQUEUE.md, ``SET_VRING_ENDIAN``)."""

    order: str
    u16: struct.Struct
    u16x2: struct.Struct
    used_elem: struct.Struct
    desc: struct.Struct

    @classmethod
    def of(cls, order: str) -> Wire:
        return cls(
            order, *(struct.Struct(order + f) for f in ("H", "HH", "II", DESC_STRUCT.format[1:]))
        )


WIRE = {"<": Wire.of("<"), ">": Wire.of(">")}


def ring_big_endian(virtio_features: int, endian: int | None, host: str = sys.byteorder) -> bool:
    """Is the ring big-endian?  VERSION_1: never (little-endian).  Legacy (virtio 0.9):
    the guest's order, which SET_VRING_ENDIAN gives when it differs from the host's
    (num 1 big, 0 little; CROSS_ENDIAN), else the host's own."""
    if virtio_features >> F.VERSION_1_BIT & 1:
        return False
    if endian is not None:
        return endian == 1
    return host == "big"


def u16(x: int) -> int:
    return x & 0xFFFF


def in_flight(avail_idx: int, used_idx: int) -> int:
    """Requests made available and not yet used (u16 wrap)."""
    return u16(avail_idx - used_idx)


def vring_need_event(event: int, new: int, old: int) -> bool:
    """The event-idx rule: did moving from ``old`` to ``new`` cross ``event``? (u16)."""
    return u16(new - event - 1) < u16(new - old)


def flag_names(flags: int, table: dict[int, str] = DESC_FLAGS) -> list[str]:
    return [name for bit, name in table.items() if flags & bit]


@dataclass(frozen=True, slots=True)
class RingConfig:
    """Where a vring is and how to read it (SET_VRING_NUM/ADDR plus features)."""

    index: int
    num: int
    desc: int
    avail: int  # packed: driver event suppression area
    used: int  # packed: device event suppression area
    packed: bool = False
    event_idx: bool = False
    in_order: bool = False  # VIRTIO_F_IN_ORDER: one used element may stand for a batch
    big_endian: bool = False  # a legacy ring of a big-endian guest (see ``ring_big_endian``)

    @classmethod
    def from_vring(cls, ring: Any, virtio_features: int | None = None) -> RingConfig | None:
        """From a ``state.Vring`` (or the sampler's record, which also knows its
        ``endian`` from SET_VRING_ENDIAN); None while its size or addresses are unknown."""
        if None in (ring.num, ring.desc, ring.avail, ring.used):
            return None
        feats = virtio_features or 0
        return cls(
            ring.index,
            ring.num,
            ring.desc,
            ring.avail,
            ring.used,
            bool(feats >> F.RING_PACKED_BIT & 1),
            bool(feats >> F.EVENT_IDX_BIT & 1),
            bool(feats >> F.IN_ORDER_BIT & 1),
            ring_big_endian(feats, getattr(ring, "endian", None)),
        )

    @property
    def wire(self) -> Wire:
        return WIRE[">" if self.big_endian else "<"]

    @property
    def valid(self) -> bool:
        if self.packed:
            return 0 < self.num <= MAX_NUM
        return 0 < self.num <= MAX_NUM and self.num & (self.num - 1) == 0

    @property
    def used_event_addr(self) -> int:
        return self.avail + 4 + 2 * self.num

    @property
    def avail_event_addr(self) -> int:
        return self.used + 4 + 8 * self.num


@dataclass(frozen=True, slots=True)
class RingSample:
    """One look at a vring.  ``avail_idx``/``used_idx`` are u16 counters (packed: slots)."""

    vring: int
    ts_ns: int
    layout: Layout
    num: int
    ok: bool = True
    avail_idx: int = 0
    used_idx: int = 0
    # split
    avail_flags: int = 0
    used_flags: int = 0
    used_event: int | None = None
    avail_event: int | None = None
    # packed: positions 0..num-1, wrap counters, event suppression areas
    avail_pos: int | None = None
    avail_wrap: int | None = None
    used_pos: int | None = None
    used_wrap: int | None = None
    driver_event_off: int | None = None
    driver_event_wrap: int | None = None
    driver_event_flags: int | None = None
    device_event_off: int | None = None
    device_event_wrap: int | None = None
    device_event_flags: int | None = None
    problems: tuple[DataProblem, ...] = ()
    #: The back-end's call fd as the proxy forwarded it (``CALL_FD_STATES``); None: unknown.
    call_fd: str | None = None

    @property
    def in_flight(self) -> int:
        return in_flight(self.avail_idx, self.used_idx)

    @property
    def wants_kick(self) -> bool | None:
        """Device-side suppression: True notify, False suppressed, None decided per index."""
        if self.layout == "split":
            if self.avail_event is not None:
                return None
            return not self.used_flags & USED_F_NO_NOTIFY
        flags = self.device_event_flags
        return None if flags == 2 else flags == 0

    @property
    def wants_call(self) -> bool | None:
        """Driver-side suppression, as ``wants_kick``."""
        if self.layout == "split":
            if self.used_event is not None:
                return None
            return not self.avail_flags & AVAIL_F_NO_INTERRUPT
        flags = self.driver_event_flags
        return None if flags == 2 else flags == 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "problems":
                value = [p.to_json() for p in value]
            if value is not None:
                out[f.name] = value
        out["in_flight"] = self.in_flight
        return out

    @classmethod
    def from_json(cls, d: Any) -> RingSample:
        """Inverse of ``to_json`` (a ``ring`` frame read back); ValueError if malformed.

        Offline analysis rebuilds samples this way and runs the same ``diff`` and
        ``diagnose`` as the live sampler.  Unknown keys (``in_flight``) are ignored.
        """
        if not isinstance(d, dict):
            raise ValueError("a ring sample is a JSON object")
        invalid = d.get("invalid")  # what the reader dropped (dataplane.records)
        for path in invalid if isinstance(invalid, list) else ():
            if str(path).split(".")[0] in _FIELD_NAMES:
                raise ValueError(f"{str(path)[:40]} is of the wrong type or range")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name == "problems":
                if not isinstance(v, list):
                    raise ValueError("problems is a list")
                v = tuple(problem_from_json(p) for p in v[:64])
            elif f.name == "layout":
                if v not in ("split", "packed"):
                    raise ValueError(f"layout {v!r:.20}")
            elif f.name == "ok":
                if not isinstance(v, bool):
                    raise ValueError("ok is a boolean")
            elif f.name == "call_fd":
                if v not in CALL_FD_STATES:
                    raise ValueError(f"call_fd {v!r:.20}")
            elif v is None and f.default is not None:
                raise ValueError(f"{f.name} may not be null")
            elif v is not None and (
                not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 64
            ):
                raise ValueError(f"{f.name} is not an unsigned integer")
            kw[f.name] = v
        if not {"vring", "ts_ns", "layout", "num"} <= kw.keys():
            raise ValueError("vring, ts_ns, layout and num are required")
        return cls(**kw)


_FIELD_NAMES = frozenset(f.name for f in fields(RingSample))
_COMPARED = tuple(f.name for f in fields(RingSample) if f.name not in ("ts_ns", "problems"))


@dataclass(frozen=True, slots=True)
class SampleDiff:
    """What changed from one sample to the next, with the index advances (u16)."""

    changed: dict[str, tuple[Any, Any]]
    avail_advanced: int
    used_advanced: int
    dt_ns: int
    problems: tuple[DataProblem, ...] = ()
    aliased: bool = False  # the ring may have lapped the u16 counters: advances unknown

    def __bool__(self) -> bool:
        return bool(self.changed)

    @property
    def rate(self) -> float:
        """Used slots per second over this interval (the hint for the next ``diff``)."""
        return self.used_advanced * 1e9 / self.dt_ns if self.dt_ns > 0 else 0.0


def diff(old: RingSample, new: RingSample, rate_hint: float = 0.0) -> SampleDiff:
    """Changed fields between two samples of one ring start, and impossible moves.

    The u16 counters alias after 65536 steps: a move 'back' by at most ``num``
    is ``ring_backwards`` unless ``rate_hint`` (slots/s: what the function
    ``rate_hint`` makes of the diffs so far) says the ring could have lapped the counter in between; then the
    diff is ``aliased`` and claims no advance.  Diff only within one ring start:
    after SET_VRING_BASE or a reset the indices restart.
    """
    changed = {
        n: (getattr(old, n), getattr(new, n))
        for n in _COMPARED
        if getattr(old, n) != getattr(new, n)
    }
    problems = []
    aliased = rate_hint * max(new.ts_ns - old.ts_ns, 0) / 1e9 >= 0x10000 - 2 * new.num
    if aliased:
        return SampleDiff(changed, 0, 0, new.ts_ns - old.ts_ns, (), True)
    if old.ok and new.ok:
        for name in ("avail_idx", "used_idx"):
            back = u16(getattr(old, name) - getattr(new, name))
            if 0 < back <= new.num:
                problems.append(
                    dp_problem(
                        "ring_backwards",
                        f"vring {new.vring} {name} moved "
                        f"back {getattr(old, name)} -> {getattr(new, name)}",
                    )
                )
    adv_a = u16(new.avail_idx - old.avail_idx) if old.ok and new.ok else 0
    adv_u = u16(new.used_idx - old.used_idx) if old.ok and new.ok else 0
    if any(p.code == "ring_backwards" for p in problems):
        adv_a = adv_u = 0
    return SampleDiff(changed, adv_a, adv_u, new.ts_ns - old.ts_ns, tuple(problems))


#: The shortest interval a ring's rate is timed over: a control sample is stamped with its
#: message's time but read when the sampler's thread gets to it (ms later under load), so
#: over a shorter one the slots it saw would read as a rate many times the ring's.
RATE_MIN_NS = 50_000_000


def rate_hint(hint: float, d: SampleDiff) -> float:
    """The ``rate_hint`` for the diff after ``d``: one rule for the live sampler and the
    offline track, so both judge a fast ring alike.  An interval that measured the used
    index moving gives its rate; one that measured nothing keeps the last hint: an
    aliased one (the ring may have lapped: its advance is unknown, not 0), one without
    a used move (a ring can stand still for a sample and run on at its old pace) and one
    too short to time (``RATE_MIN_NS``)."""
    if d.aliased or d.dt_ns < RATE_MIN_NS or not d.used_advanced:
        return hint
    return d.rate


def agrees_with_base(s: RingSample, base: int) -> bool:
    """Can ``s`` be the split ring the back-end stopped at ``base`` (its GET_VRING_BASE
    reply: the next avail index it would take)?  The driver made at most ``num`` more
    available, and at most ``num`` of those taken are not used yet.  A read of memory that
    is no longer the ring (freed and zeroed, reused) rarely is; packed samples are never
    taken for it (their walk may have followed whatever the memory now holds)."""
    if not s.ok or s.layout != "split":
        return False
    return u16(s.avail_idx - base) <= s.num and u16(base - s.used_idx) <= s.num


def follows(last: RingSample | None, s: RingSample) -> bool:
    """Can ``s`` be the ring ``last`` looked at, a moment later, with nothing to check it
    against (RESET_*: no reply, no base)?  Split: both indices moved forward by at most
    ``num`` (what the used ids can still be checked over, ``SplitTracker``; memory taken
    back and zeroed reads as a move back, or as a jump of most of the u16 range).
    Packed: nothing moved (a walk over reused memory moves: zeroed descriptors read as
    used ones on an odd lap)."""
    if last is None or not (last.ok and s.ok) or (s.layout, s.num) != (last.layout, last.num):
        return False
    moved_a, moved_u = u16(s.avail_idx - last.avail_idx), u16(s.used_idx - last.used_idx)
    if s.layout == "packed":
        return moved_a == moved_u == 0
    return moved_a <= s.num and moved_u <= s.num and s.in_flight <= s.num


def _failed(cfg: RingConfig, ts_ns: int, layout: Layout, problem: DataProblem) -> RingSample:
    return RingSample(cfg.index, ts_ns, layout, cfg.num, ok=False, problems=(problem,))


def _invalid_num(cfg: RingConfig, ts_ns: int, layout: Layout) -> RingSample:
    return _failed(
        cfg,
        ts_ns,
        layout,
        dp_problem("ring_bad_size", f"vring {cfg.index}: num {cfg.num} is not a valid queue size"),
    )


# --- split rings -------------------------------------------------------------
def sample_split(mem: GuestMemory, cfg: RingConfig, ts_ns: int = 0) -> RingSample:
    """Read avail/used flags and indices (and the event indices with EVENT_IDX)."""
    if not cfg.valid:
        return _invalid_num(cfg, ts_ns, "split")
    try:
        w = cfg.wire
        avail_flags, avail_idx = w.u16x2.unpack(mem.read_ring(cfg.avail, 4))
        used_flags, used_idx = w.u16x2.unpack(mem.read_ring(cfg.used, 4))
        used_event = avail_event = None
        if cfg.event_idx:
            (used_event,) = w.u16.unpack(mem.read_ring(cfg.used_event_addr, 2))
            (avail_event,) = w.u16.unpack(mem.read_ring(cfg.avail_event_addr, 2))
    except GuestMemoryError as e:
        return _failed(cfg, ts_ns, "split", e.problem)
    sample = RingSample(
        cfg.index,
        ts_ns,
        "split",
        cfg.num,
        True,
        avail_idx,
        used_idx,
        avail_flags,
        used_flags,
        used_event,
        avail_event,
    )
    if sample.in_flight > cfg.num:
        sample = replace(
            sample,
            problems=(
                dp_problem(
                    "ring_index_ahead",
                    f"vring {cfg.index}: avail {avail_idx} is "
                    f"{sample.in_flight} ahead of used {used_idx}, num {cfg.num}",
                ),
            ),
        )
    return sample


def read_avail_entries(mem: GuestMemory, cfg: RingConfig, start: int, count: int) -> list[int]:
    """Heads in avail ring slots ``start .. start+count-1`` (u16 indices; count <= num)."""
    count = max(0, min(count, cfg.num))
    out = []
    for i in range(count):
        slot = u16(start + i) % cfg.num
        out.append(cfg.wire.u16.unpack(mem.read_ring(cfg.avail + 4 + 2 * slot, 2))[0])
    return out


def read_used_elems(
    mem: GuestMemory, cfg: RingConfig, start: int, count: int
) -> list[tuple[int, int]]:
    """(id, len) in used ring slots ``start .. start+count-1`` (count <= num)."""
    count = max(0, min(count, cfg.num))
    out = []
    for i in range(count):
        slot = u16(start + i) % cfg.num
        out.append(cfg.wire.used_elem.unpack(mem.read_ring(cfg.used + 4 + 8 * slot, 8)))
    return out


# --- packed rings -------------------------------------------------------------
def read_packed_desc(mem: GuestMemory, cfg: RingConfig, pos: int) -> tuple[int, int, int, int]:
    """(addr, len, id, flags) of packed descriptor ``pos``."""
    return cfg.wire.desc.unpack(mem.read_ring(cfg.desc + 16 * pos, 16))


def _is_avail(flags: int, wrap: int) -> bool:
    return bool(flags & DESC_F_AVAIL) == bool(wrap) and bool(flags & DESC_F_USED) != bool(wrap)


def _is_used(flags: int, wrap: int) -> bool:
    return bool(flags & DESC_F_AVAIL) == bool(wrap) and bool(flags & DESC_F_USED) == bool(wrap)


@dataclass(slots=True)
class PackedTracker:
    """Last known positions of a packed ring, carried from sample to sample.

    Starts from the ring base (SET_VRING_BASE: bits 0-14 avail position, 15
    avail wrap, 16-30 used position, 31 used wrap) or from the reset state.
    A base with the upper 16 bits zero (DPDK's virtio-user sends 0x8000 on a
    fresh start; DPDK's vhost reads both positions from the low 16 bits) puts
    the used position where the avail one is.
    ``ends`` remembers where each buffer id's chain ends (a position mod
    2·num) when it was made available: a used descriptor moves the used
    position to the end of its buffer, which also covers IN_ORDER batches
    (one used descriptor, with the last buffer's id, for several buffers).
    """

    num: int
    avail_pos: int = 0
    avail_wrap: int = 1
    used_pos: int = 0
    used_wrap: int = 1
    avail_count: int = 0  # u16 slot counters
    used_count: int = 0
    ends: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_base(cls, num: int, base: int) -> PackedTracker:
        base &= 0xFFFFFFFF
        if not base >> 16:
            base |= base << 16
        b = decode_vring_base(base, packed=True)  # the decoder's split of the word
        n = max(num, 1)
        t = cls(num, b["avail_idx"] % n, b["avail_wrap"], b["used_idx"] % n, b["used_wrap"])
        t.avail_count = u16(t.used_count + t.slots_in_flight())
        return t

    def slots_in_flight(self) -> int:
        a = self.avail_pos + (0 if self.avail_wrap else self.num)
        u = self.used_pos + (0 if self.used_wrap else self.num)
        return (a - u) % (2 * self.num) if self.num else 0

    def _lin(self, pos: int, wrap: int) -> int:
        return pos + (0 if wrap else self.num)

    def _chain_slots(self, mem: GuestMemory, cfg: RingConfig, pos: int) -> int:
        """Slots of the available chain starting at ``pos`` (the avail position).

        Its end is recorded under the id of the last descriptor (where the
        spec puts the buffer id) and of the head (where some drivers put it).
        """
        n, p, head_id, ident = 0, pos, None, 0
        while n < self.num:
            _, _, ident, flags = read_packed_desc(mem, cfg, p)
            head_id = ident if head_id is None else head_id
            n += 1
            p = p + 1 if p + 1 < self.num else 0
            if not flags & DESC_F_NEXT:
                break
        end = (self._lin(pos, self.avail_wrap) + n) % (2 * self.num)
        self.ends[ident] = end
        if head_id is not None:
            self.ends[head_id] = end
        return n

    def walk(self, mem: GuestMemory, cfg: RingConfig) -> None:
        """Advance both positions over what the driver / device marked (<= 3·num reads).

        A packed ring keeps no used index: once the driver has reclaimed a used
        slot and made it available again, the used mark is gone.  So the avail
        walk also moves the used position: the driver may only reuse a slot
        the device used, hence an available descriptor beyond a full ring
        proves that many slots were used.  Exact while the driver moves less
        than a lap (num slots) between two walks.
        """
        self._walk_used(mem, cfg)
        steps = 0
        while steps < self.num:
            _, _, _, flags = read_packed_desc(mem, cfg, self.avail_pos)
            if not _is_avail(flags, self.avail_wrap):
                break
            n = self._chain_slots(mem, cfg, self.avail_pos)
            room = self.num - self.slots_in_flight()
            if n > room:
                self._advance_used(n - room)
            steps += n
            self._advance_avail(n)
        if len(self.ends) > 4 * self.num:  # ids are < num for a sane driver
            self.ends.clear()
        self._walk_used(mem, cfg)

    def _walk_used(self, mem: GuestMemory, cfg: RingConfig) -> None:
        steps = 0
        while steps < self.num and self.slots_in_flight():
            _, _, ident, flags = read_packed_desc(mem, cfg, self.used_pos)
            if not _is_used(flags, self.used_wrap):
                break
            end = self.ends.get(ident)
            n = (
                1
                if end is None
                else (end - self._lin(self.used_pos, self.used_wrap)) % (2 * self.num)
            )
            if not 1 <= n <= self.slots_in_flight():
                n = 1
            steps += n
            self._advance_used(n)

    def _advance_used(self, n: int) -> None:
        self.used_count = u16(self.used_count + n)
        self.used_pos += n
        if self.used_pos >= self.num:
            self.used_pos -= self.num
            self.used_wrap ^= 1

    def _advance_avail(self, n: int) -> None:
        self.avail_count = u16(self.avail_count + n)
        self.avail_pos += n
        if self.avail_pos >= self.num:
            self.avail_pos -= self.num
            self.avail_wrap ^= 1


def sample_packed(
    mem: GuestMemory, cfg: RingConfig, tracker: PackedTracker, ts_ns: int = 0
) -> RingSample:
    """Read both event suppression areas and walk the descriptor flags forward."""
    if not cfg.valid or tracker.num != cfg.num:
        return _invalid_num(cfg, ts_ns, "packed")
    try:
        drv_desc, drv_flags = cfg.wire.u16x2.unpack(mem.read_ring(cfg.avail, 4))
        dev_desc, dev_flags = cfg.wire.u16x2.unpack(mem.read_ring(cfg.used, 4))
        tracker.walk(mem, cfg)
    except GuestMemoryError as e:
        return _failed(cfg, ts_ns, "packed", e.problem)
    return RingSample(
        cfg.index,
        ts_ns,
        "packed",
        cfg.num,
        True,
        tracker.avail_count,
        tracker.used_count,
        avail_pos=tracker.avail_pos,
        avail_wrap=tracker.avail_wrap,
        used_pos=tracker.used_pos,
        used_wrap=tracker.used_wrap,
        driver_event_off=drv_desc & 0x7FFF,
        driver_event_wrap=drv_desc >> 15,
        driver_event_flags=drv_flags & 3,
        device_event_off=dev_desc & 0x7FFF,
        device_event_wrap=dev_desc >> 15,
        device_event_flags=dev_flags & 3,
    )


def sample(
    mem: GuestMemory, cfg: RingConfig, ts_ns: int = 0, tracker: PackedTracker | None = None
) -> RingSample:
    """One sample of either layout (packed needs the vring's tracker)."""
    if cfg.packed:
        return sample_packed(mem, cfg, tracker or PackedTracker(cfg.num), ts_ns)
    return sample_split(mem, cfg, ts_ns)
