"""What the ring sampler keeps per connection and per vring, and what each vring
message sets on a vring (the setters ``sampler_messages._VRINGS`` names per request).

Only the sampler's thread touches these; :meth:`ConnState.release` unmaps and closes
everything a connection holds, and gives it back to the sampler's fd budget.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .inflight import SplitTracker
from .inflight_region import InflightRegion
from .memory import GuestMemory
from .notify import NOFD
from .rings import PackedTracker, RingConfig, RingSample
from .sampler_fds import FdBudget

ADDR = struct.Struct("=IIQQQQ")  # vhost_vring_addr: index, flags, desc, used, avail, log


@dataclass(slots=True)
class RingState:
    index: int = 0
    num: int | None = None  # SET_VRING_NUM/ADDR as RingConfig.from_vring reads them
    desc: int | None = None
    used: int | None = None
    avail: int | None = None
    endian: int | None = None  # SET_VRING_ENDIAN: 1 big, 0 little (legacy rings only)
    cfg: RingConfig | None = None
    started: bool = False
    packed: PackedTracker | None = None
    split: SplitTracker = field(default_factory=SplitTracker)
    base: int = 0
    last: RingSample | None = None  # last sample of this ring start
    rate: float = 0.0
    emitted_ns: int = 0
    codes: tuple[str, ...] = ()  # problem codes of the last emitted sample
    call_wait_ns: int | None = None  # last used move that needed a call we can judge
    #: A stop sample read after the GET_VRING_BASE reply passed (Sampler.released): its
    #: frame, held until the reply's base says whether it was still the ring.
    held: tuple[RingSample, dict[str, Any]] | None = None


@dataclass(slots=True)
class ConnState:
    mem: GuestMemory = field(default_factory=GuestMemory)
    rings: dict[int, RingState] = field(default_factory=dict)
    lost: bool = False
    device: str | None = None
    virtio: int | None = None  # acked (SET_FEATURES)
    protocol: int | None = None  # acked (SET_PROTOCOL_FEATURES)
    #: Memory messages not yet applied, with our dups of their fds: decoded and mapped
    #: only when a ring is looked at (a front-end that resends its table costs no mmaps).
    pending: list[tuple[int, bytes, tuple, list[int]]] = field(default_factory=list)
    #: SET_VRING_CALL as forwarded to the back-end: vring -> "fd" | "nofd" (the sampler
    #: sees only what went through: a message a rule dropped never reaches it).
    calls: dict[int, str] = field(default_factory=dict)
    #: False after a RESET_*: back-ends differ in whether they keep their call fds.
    calls_known: bool = True
    #: GET_VRING_BASE replies this thread has taken from the queue (see Sampler.released).
    released: int = 0
    #: The INFLIGHT_SHMFD buffer of the last SET_INFLIGHT_FD, mapped read-only.
    inflight: InflightRegion | None = None
    #: The sampler's budget (sampler_fds.py) the dups and mappings above count against,
    #: and how many mappings (each holding its fd) are counted now.
    fds: FdBudget = field(default_factory=FdBudget)
    charged: int = 0

    def call_fd(self, index: int) -> str | None:
        """The back-end's call fd for ``index`` (rings.CALL_FD_STATES), None if unknown."""
        return self.calls.get(index) or ("none" if self.calls_known else None)

    def drop_pending(self) -> None:
        for *_, dups in self.pending:
            self.fds.close(dups)
        self.pending.clear()

    def recount(self) -> None:
        """The mappings changed: count the fds they hold against the budget (a mapping is
        made from a dup already counted, which is closed after it: never over it)."""
        now = self.mem.mapped + int(self.inflight is not None and self.inflight.mapped)
        self.fds.charge(now - self.charged)
        self.charged = now

    def superseded(self, inflight: bool) -> None:
        """A memory message whose dups were closed while it waited (a later one replaces
        it): until then nothing is read through what it replaced."""
        if inflight:
            if self.inflight is not None:
                self.inflight.close()
                self.inflight = None
        else:
            self.drop_pending()
            self.mem.set_table([], [])
        self.recount()

    def release(self) -> None:
        """Unmap and close everything this connection holds (guest memory, inflight)."""
        self.drop_pending()
        self.mem.close()
        if self.inflight is not None:
            self.inflight.close()
            self.inflight = None
        self.recount()


# -- what a vring message sets (value: the payload's num, or its u64 for vhost_vring_fd);
# -- False: the payload is too short for the message, which is then ignored


def set_num(c: ConnState, ring: RingState, value: int, data: bytes) -> bool:
    ring.num = value
    return True


def set_endian(c: ConnState, ring: RingState, value: int, data: bytes) -> bool:
    ring.endian = value
    return True


def set_addr(c: ConnState, ring: RingState, value: int, data: bytes) -> bool:
    if len(data) - 12 < ADDR.size:
        return False
    _, _, ring.desc, ring.used, ring.avail, _ = ADDR.unpack_from(data, 12)
    return True


def set_base(c: ConnState, ring: RingState, value: int, data: bytes) -> bool:
    ring.base = value
    ring.last = None
    ring.packed = None
    ring.split = SplitTracker()
    return True


def set_call(c: ConnState, ring: RingState, value: int, data: bytes) -> bool:
    c.calls[ring.index] = "nofd" if value & NOFD else "fd"
    return True
