"""A vhost-user back-end that never processes its rings, but feeds a GuestMemory.

It answers the handshake like a net device, hands every memory table to a
``GuestMemory`` (which dups the fds; the back-end closes its own copies at
once, as the proxy will) and records each vring's size, addresses and base, so
a test can read a real front-end's rings through the library and see them
fill up: a stalled back-end made on purpose.

With ``scrub`` it also plays a back-end that takes its rings' memory back at
RESET_OWNER / RESET_DEVICE (freed, zeroed or reused, as a DPDK heap does): it
overwrites every ring it knows before anything else can read them, and sets
``reset``.  "zero" zeroes them; "junk" fills the available ring with 0xFF and
zeroes the used ring (an available index far ahead of the used one).
"""

from __future__ import annotations

import mmap
import socket
import struct
import threading
from dataclasses import dataclass

from vuinspect.dataplane import GuestMemory, PackedTracker, RegionSpec, RingConfig, sample
from vuinspect.dataplane.inflight import in_flight_chains
from vuinspect.dataplane.rings import DESC_F_AVAIL, DESC_F_USED, read_avail_entries
from vuinspect.protocol.requests import FrontendRequest as FE
from vuinspect.testing import wire

VERSION_1, PROTOCOL_FEATURES, EVENT_IDX, RING_PACKED = 1 << 32, 1 << 30, 1 << 29, 1 << 34
REGION = struct.Struct("=QQQQ")


@dataclass
class VringInfo:
    num: int | None = None
    desc: int | None = None
    used: int | None = None
    avail: int | None = None
    base: int = 0
    started: bool = False


class RingBackend:
    """Serves one connection on a thread; ``mem`` and ``vrings`` follow the messages."""

    def __init__(
        self, listener: socket.socket, *, packed: bool = False, scrub: str | None = None
    ) -> None:
        self.listener = listener
        self.scrub = scrub
        self.reset = threading.Event()  # a RESET_* was handled (and the rings scrubbed)
        self.offer = VERSION_1 | PROTOCOL_FEATURES | EVENT_IDX | (RING_PACKED if packed else 0)
        self.acked = 0
        self.mem = GuestMemory()
        self.vrings: dict[int, VringInfo] = {}
        self.requests: list[int] = []
        # the test's own writable view, to play the device in ``consume`` (the library never writes)
        self._rw: list[tuple[RegionSpec, mmap.mmap, int]] = []
        self._used: dict[int, PackedTracker] = {}  # packed: where the device writes next
        self.lock = threading.RLock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def config(self, index: int) -> RingConfig | None:
        with self.lock:
            ring = self.vrings.get(index)
            if ring is None or not ring.started or ring.num is None:
                return None
            return RingConfig(
                index,
                ring.num,
                ring.desc or 0,
                ring.avail or 0,
                ring.used or 0,
                bool(self.acked & RING_PACKED),
                bool(self.acked & EVENT_IDX),
            )

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                while (msg := wire.recv_msg(conn)) is not None:
                    try:
                        reply = self._handle(msg)
                    finally:
                        msg.close_fds()
                    if reply is not None:
                        wire.send_raw(conn, wire.pack(msg.request, wire.REPLY_FLAGS, reply))
        except (OSError, EOFError) as exc:
            self.error = exc

    def _handle(self, msg: wire.Msg) -> bytes | None:
        r, p = msg.request, msg.payload
        self.requests.append(r)
        with self.lock:
            if r == wire.GET_FEATURES:
                return wire.U64.pack(self.offer)
            if r == wire.GET_PROTOCOL_FEATURES:
                return wire.U64.pack(1 | 1 << 3)  # MQ, REPLY_ACK
            if r == wire.GET_QUEUE_NUM:
                return wire.U64.pack(2)
            if r == wire.SET_FEATURES:
                self.acked = wire.U64.unpack_from(p)[0]
                self.mem.set_features(virtio=self.acked)
            elif r == wire.SET_PROTOCOL_FEATURES:
                self.mem.set_features(protocol=wire.U64.unpack_from(p)[0])
            elif r == wire.SET_MEM_TABLE:
                n = struct.unpack_from("=I", p)[0]
                specs = [RegionSpec(*REGION.unpack_from(p, 8 + 32 * i)) for i in range(n)]
                self.mem.set_table(specs, msg.fds)
                self._unmap_rw()
                for spec, fd in zip(specs, msg.fds, strict=False):
                    start = spec.mmap_offset - spec.mmap_offset % mmap.PAGESIZE
                    m = mmap.mmap(fd, spec.memory_size + spec.mmap_offset - start, offset=start)
                    self._rw.append((spec, m, spec.mmap_offset - start))
            elif r in (wire.SET_VRING_NUM, wire.SET_VRING_BASE):
                index, num = struct.unpack_from("=II", p)
                ring = self.vrings.setdefault(index, VringInfo())
                if r == wire.SET_VRING_NUM:
                    ring.num = num
                else:
                    ring.base = num
            elif r == wire.SET_VRING_ADDR:
                index, _flags, desc, used, avail, _log = struct.unpack_from("=IIQQQQ", p)
                ring = self.vrings.setdefault(index, VringInfo())
                ring.desc, ring.used, ring.avail = desc, used, avail
            elif r == wire.SET_VRING_KICK:
                self.vrings.setdefault(
                    wire.U64.unpack_from(p)[0] & 0xFF, VringInfo()
                ).started = True
            elif r == wire.GET_VRING_BASE:
                index = struct.unpack_from("=I", p)[0]
                self.vrings.setdefault(index, VringInfo()).started = False
                return struct.pack("=II", index, 0)
            elif r == wire.GET_MAX_MEM_SLOTS:
                return wire.U64.pack(8)
            elif r in (FE.RESET_OWNER, FE.RESET_DEVICE):
                self._reset()
        if msg.flags & wire.FLAG_NEED_REPLY:
            return wire.U64.pack(0)
        return None

    def _reset(self) -> None:
        """RESET_*: every ring stops; with ``scrub`` their memory is overwritten first."""
        for ring in self.vrings.values():
            if self.scrub is not None and None not in (ring.num, ring.desc, ring.avail, ring.used):
                num = ring.num or 0
                self._write(ring.desc or 0, bytes(16 * num))
                fill = b"\xff" if self.scrub == "junk" else b"\0"
                self._write(ring.avail or 0, fill * (6 + 2 * num))
                self._write(ring.used or 0, bytes(6 + 8 * num))
            ring.started = False
        self.reset.set()

    def _write(self, uva: int, data: bytes) -> None:
        for spec, m, delta in self._rw:
            if spec.userspace_addr <= uva < spec.userspace_addr + spec.memory_size:
                off = uva - spec.userspace_addr + delta
                m[off : off + len(data)] = data
                return
        raise ValueError(f"uva {uva:#x} in no region")

    def consume(self, index: int) -> int:
        """Play the device: mark every available buffer of ``index`` used; returns how many."""
        with self.lock:
            cfg = self.config(index)
            if cfg is None:
                return 0
            if not cfg.packed:
                s = sample(self.mem, cfg)
                heads = read_avail_entries(self.mem, cfg, s.used_idx, s.in_flight)
                for k, head in enumerate(heads):
                    slot = (s.used_idx + k) % cfg.num
                    self._write(cfg.used + 4 + 8 * slot, struct.pack("<II", head, 0))
                self._write(cfg.used + 2, struct.pack("<H", (s.used_idx + len(heads)) & 0xFFFF))
                return len(heads)
            t = self._used.setdefault(
                index, PackedTracker.from_base(cfg.num, self.vrings[index].base)
            )
            s = sample(self.mem, cfg, 0, t)
            chains = in_flight_chains(self.mem, cfg, s)
            for chain in chains:
                slots = max(1, sum(not d.indirect_table for d in chain.descs))
                bits = DESC_F_AVAIL | DESC_F_USED if t.used_wrap else 0
                ident = chain.descs[0].next if chain.descs else 0
                self._write(cfg.desc + 16 * t.used_pos + 8, struct.pack("<IHH", 0, ident, bits))
                t.used_pos += slots
                if t.used_pos >= cfg.num:
                    t.used_pos -= cfg.num
                    t.used_wrap ^= 1
                t.used_count = (t.used_count + slots) & 0xFFFF
            return len(chains)

    def _unmap_rw(self) -> None:
        for _, m, _ in self._rw:
            m.close()
        self._rw.clear()

    def close(self) -> None:
        with self.lock:
            self.mem.close()
            self._unmap_rw()
