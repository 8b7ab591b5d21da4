"""What each main-channel message the ring sampler reads does to its view of a connection.

The sampler's thread (sampler.py: queue, drain, ticks, samples, frames) hands each
feature, reset and vring message to ``_control`` (read by hand: µs, not a decode) and
each decoded memory or IOTLB message to ``_apply``; the tables at the end say, per
request, what is read and what becomes of the ring (it stops, starts or is set up
again), and their keys are what the sampler wants (``WANTED``).  Kept apart from the
sampling so that the protocol side reads as one table, the sampling as one loop.
A mixin of :class:`~.sampler.Sampler`: only its thread calls these.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol import features as F
from ..protocol.requests import FrontendRequest as FE
from .memory import RegionSpec, regions_from
from .notify import VRING_INDEX
from .rings import PackedTracker, RingConfig
from .sampler_state import (
    ConnState,
    RingState,
    set_addr,
    set_base,
    set_call,
    set_endian,
    set_num,
)
from .track import MAX_RINGS  # vring indices followed per connection

_U64 = struct.Struct("=Q")
#: vhost_vring_state: index, num (also GET_VRING_BASE's reply: index, base).
VRING_STATE = struct.Struct("=II")


class SamplerMessages:
    """The Sampler's handlers of the messages it reads (see the module doc)."""

    if TYPE_CHECKING:  # (the Sampler's, sampler.py)

        def _conn(self, conn: int) -> ConnState: ...

        def _look(
            self, c: ConnState, conn: int, i: int, ring: RingState, ts: int, why: str | None
        ) -> None: ...

        def _note(self, conn: int, ts: int, text: str) -> None: ...

    def _device(self, conn: int, data: bytes) -> None:
        c = self._conn(conn)
        if c.device is None and len(data) >= 20:
            c.device = F.guess_device(_U64.unpack_from(data, 12)[0])

    def _control(self, c: ConnState, conn: int, ts: int, r: int, data: bytes) -> None:
        """A feature, reset or vring message, read by hand as _CONTROL says (the common
        case: µs, not a decode).  A payload too short for its request is ignored, as a
        back-end would."""
        handle = _CONTROL.get(r)
        if handle is not None:
            handle(self, c, conn, ts, r, data)

    def _features(self, c: ConnState, conn: int, ts: int, r: int, data: bytes) -> None:
        """SET_FEATURES / SET_PROTOCOL_FEATURES: the acked word (_FEATURE_WORDS)."""
        if len(data) < 20:
            return
        setattr(c, _FEATURE_WORDS[r], _U64.unpack_from(data, 12)[0])
        c.mem.set_features(c.virtio, c.protocol)
        for i in c.rings:
            self._configure(c, i)

    def _reset(self, c: ConnState, conn: int, ts: int, r: int, data: bytes) -> None:
        """RESET_OWNER / RESET_DEVICE: every ring stops, memory and call fds are gone.

        Nothing answers a reset, so its peers may take the rings' memory back at once
        (a back-end scrubbing them, a front-end's heap zeroing them), and this thread
        reads the stop samples after the message went on: no base to check them
        against, as GET_VRING_BASE's reply gives.  Reading before forwarding would make
        the forwarding wait for this thread; so a reset wakes it at once (sampler._VRING)
        and each stop sample is kept only if it follows from the ring's last look
        (``rings.follows``, and nothing read is a problem): then it is the ring's end,
        real progress up to the reset included (its indices only: no chains nor
        inflight entries, which nothing vouches for; the last look's stay).  Else it is
        dropped and the last look stays the ring's last word (the reader judges the
        stop from it): a read of memory that is no ring any more never raises a problem
        nor moves a ring."""
        self._stop_all(c, conn, ts)
        c.drop_pending()
        c.mem.reset()
        c.recount()
        c.rings.clear()
        c.calls.clear()
        c.calls_known = False

    def _vring(self, c: ConnState, conn: int, ts: int, r: int, data: bytes) -> None:
        """A vring message: its ring (index and value read as _VRINGS says), what the
        message sets on it, then the ring stops, starts or is set up again."""
        fd_layout, setter, then = _VRINGS[r]
        if len(data) < 20:
            return
        if fd_layout:  # vhost_vring_fd: the index in the low byte, NOFD above
            value = _U64.unpack_from(data, 12)[0]
            i = value & VRING_INDEX
        else:  # vhost_vring_state: index, num
            i, value = VRING_STATE.unpack_from(data, 12)
        if i >= MAX_RINGS:
            return
        ring = c.rings.get(i)
        if ring is None:
            ring = c.rings[i] = RingState(i)
        if setter is None or setter(c, ring, value, data):
            then(self, c, conn, ts, ring)

    def _ring_stop(
        self, c: ConnState, conn: int, ts: int, ring: RingState, why: str = "stop"
    ) -> None:
        """GET_VRING_BASE ("stop") or a reset ("reset", see ``_reset``): the ring's last look."""
        if ring.started:
            self._look(c, conn, ring.index, ring, ts, why)
        ring.started = False
        ring.last = None

    def _ring_start(self, c: ConnState, conn: int, ts: int, ring: RingState) -> None:
        self._configure(c, ring.index)
        if ring.started:
            self._look(c, conn, ring.index, ring, ts, "control")
            return
        ring.started = True
        ring.last = None
        ring.held = None
        self._look(c, conn, ring.index, ring, ts, "start")

    def _ring_setup(self, c: ConnState, conn: int, ts: int, ring: RingState) -> None:
        """A ring's setup changed: its config again, and a look if it runs."""
        self._configure(c, ring.index)
        if ring.started:
            self._look(c, conn, ring.index, ring, ts, "control")

    def _apply(self, c: ConnState, conn: int, ts: int, m: Any, fds: list[int]) -> None:
        """A decoded memory or IOTLB message, as _APPLY says."""
        handle = _APPLY.get(m.request)
        if handle is not None:
            handle(self, c, conn, ts, m.payload, fds)

    def _mem_table(self, c: ConnState, conn: int, ts: int, p: dict, fds: list[int]) -> None:
        if not isinstance(p.get("regions"), list):  # (rings go on: memory hotplug)
            return
        try:
            problems = c.mem.set_table(regions_from(p["regions"]), fds)
        except (KeyError, TypeError, ValueError) as exc:
            problems = []
            self._note(conn, ts, f"ring sampler: memory table not understood: {exc}")
        for prob in problems:
            self._note(conn, ts, f"ring sampler: {prob.code}: {prob.text}")

    def _mem_add(self, c: ConnState, conn: int, ts: int, p: dict, fds: list[int]) -> None:
        if "mmap_offset" in p and fds:
            for prob in c.mem.add_region(RegionSpec.from_payload(p), fds[0]):
                self._note(conn, ts, f"ring sampler: {prob.code}: {prob.text}")

    def _mem_remove(self, c: ConnState, conn: int, ts: int, p: dict, fds: list[int]) -> None:
        if "userspace_addr" in p:
            c.mem.remove_region(RegionSpec.from_payload(p))

    def _iotlb(self, c: ConnState, conn: int, ts: int, p: dict, fds: list[int]) -> None:
        c.mem.iotlb_message(p)

    def _configure(self, c: ConnState, i: int) -> None:
        ring = c.rings[i]
        cfg = RingConfig.from_vring(ring, c.virtio)
        if cfg != ring.cfg:
            ring.cfg = cfg
            ring.last = None
            ring.packed = None
        if cfg is not None and cfg.packed and ring.packed is None and cfg.valid:
            ring.packed = PackedTracker.from_base(cfg.num, ring.base)

    def _stop_all(self, c: ConnState, conn: int, ts: int) -> None:
        for ring in c.rings.values():
            self._ring_stop(c, conn, ts, ring, "reset")


#: The feature words SET_FEATURES and SET_PROTOCOL_FEATURES ack, as ConnState attributes.
_FEATURE_WORDS: dict[int, str] = {FE.SET_FEATURES: "virtio", FE.SET_PROTOCOL_FEATURES: "protocol"}


_Set = Callable[[ConnState, RingState, int, bytes], bool]  # False: too short, ignored
_Then = Callable[[SamplerMessages, ConnState, int, int, RingState], None]
_STOP, _START, _SETUP = (
    SamplerMessages._ring_stop,
    SamplerMessages._ring_start,
    SamplerMessages._ring_setup,
)
#: The vring messages: (the vhost_vring_fd layout, else vhost_vring_state), what the
#: message sets on its ring, and then what becomes of the ring.
_VRINGS: dict[int, tuple[bool, _Set | None, _Then]] = {
    FE.SET_VRING_NUM: (False, set_num, _SETUP),
    FE.SET_VRING_ADDR: (False, set_addr, _SETUP),
    FE.SET_VRING_BASE: (False, set_base, _SETUP),
    FE.GET_VRING_BASE: (False, None, _STOP),
    FE.SET_VRING_KICK: (True, None, _START),
    FE.SET_VRING_CALL: (True, set_call, _SETUP),
    FE.SET_VRING_ENABLE: (False, None, _SETUP),
    FE.SET_VRING_ENDIAN: (False, set_endian, _SETUP),
    FE.VRING_KICK: (True, None, _START),
}
_Read = Callable[[SamplerMessages, ConnState, int, int, int, bytes], None]
#: The messages read by hand: features, resets, vring setup.
_CONTROL: dict[int, _Read] = {
    FE.SET_FEATURES: SamplerMessages._features,
    FE.SET_PROTOCOL_FEATURES: SamplerMessages._features,
    FE.RESET_OWNER: SamplerMessages._reset,
    FE.RESET_DEVICE: SamplerMessages._reset,
    **dict.fromkeys(_VRINGS, SamplerMessages._vring),
}
_Apply = Callable[[SamplerMessages, ConnState, int, int, dict, list[int]], None]
#: The messages decoded in full: guest memory and the IOTLB.
_APPLY: dict[int, _Apply] = {
    FE.SET_MEM_TABLE: SamplerMessages._mem_table,
    FE.ADD_MEM_REG: SamplerMessages._mem_add,
    FE.REM_MEM_REG: SamplerMessages._mem_remove,
    FE.IOTLB_MSG: SamplerMessages._iotlb,
}
#: Main-channel front-end requests the sampler needs: features, memory, vring setup, resets.
WANTED = frozenset(int(r) for r in (*_CONTROL, *_APPLY, FE.SET_INFLIGHT_FD))
