"""The ring sampler of the proxy process: vrings read from guest memory, as ``ring`` frames.

Runs on its own thread and is fed through a bounded queue, so the forwarding
threads never wait on it: they only append (``control``, ``memory``,
``event``), and ``memory`` makes the dups of a memory message's fds before the
relay closes its own copies (every fd the sampler holds counts against one budget:
sampler_fds.py).  The thread reads the vring and feature messages
by hand and decodes only memory and IOTLB messages (a :class:`Pipeline`): what each
does to a connection is sampler_messages.py's tables; it
keeps one :class:`GuestMemory` per connection (mapped read-only, following
SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG, IOTLB, RESET_*, close: nothing stays
mapped once a connection ends), and samples each started vring every
``interval`` and at each of its control messages.  A sample becomes a frame
(``emit``) only when something changed, at the ring's start (SET_VRING_KICK)
and stop (GET_VRING_BASE, RESET_*; a closed connection is not sampled again:
its close frame ends it; a stop read after its peers may have taken the ring back is
kept only if it checks out: ``released``, ``sampler_messages._reset``), and
every ``KEEPALIVE_NS`` while requests wait and nothing moves (so a stall shows
as time passing in the capture); the reader's session diagnoses from them.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..frames import Direction, Frame, event_frame, event_info, ring_frame
from ..protocol.requests import MAX_FDS
from ..protocol.requests import FrontendRequest as FE
from .diagnose import is_receive_queue, needs_call
from .inflight import in_flight_chains
from .inflight_region import InflightRegion
from .notify import Notifier
from .rings import agrees_with_base, diff, follows, rate_hint, sample
from .sampler_fds import FdBudget, Held, OverBudget
from .sampler_messages import VRING_STATE, WANTED, SamplerMessages
from .sampler_state import ConnState, RingState

#: Queue bound: items of at most MAX_WANTED_SIZE bytes (a vring message is 20-52), so
#: < 40 MiB even of the largest (a peer flooding padded messages), ~8 MiB of real ones.  A proxy whose sampler is this far
#: behind drops the item (closing its fds) and stops sampling that connection, with a note.
MAX_QUEUE = 1 << 16
#: A message longer than this is no vring, feature or memory message the sampler can use
#: (SET_MEM_TABLE with 8 regions is 276 bytes): not queued.
MAX_WANTED_SIZE = 512
#: While requests are in flight and nothing moves, a sample at least this often.
KEEPALIVE_NS = 500_000_000
#: After a used move that needed a call the reader can judge (no call fd, or traced calls),
#: keepalive samples this long: the reader's lost_call fires at 2 s without a new change.
CALL_WATCH_NS = 2_500_000_000
#: In-flight chains stored in a ring frame (with their request headers) and descriptors.
MAX_CHAINS = 16
MAX_DESCS = 64
#: Descriptor states of the inflight region listed in a ring frame (all are counted).
MAX_INFLIGHT_DESCS = 16
#: The main-channel front-end requests the sampler needs are the keys of its tables
#: (sampler_messages.py: _APPLY, decoded; _CONTROL, read by hand) and SET_INFLIGHT_FD:
#: ``WANTED``.
#: These carry fds to dup: guest memory, and the inflight buffer (SET_INFLIGHT_FD).
MEMORY = frozenset((FE.SET_MEM_TABLE, FE.SET_INFLIGHT_FD, FE.ADD_MEM_REG))
_INFLIGHT = struct.Struct("=QQHH")  # mmap_size mmap_offset num_queues queue_size
#: These are held back until a ring is looked at (applied in order).
_PENDING = frozenset((FE.SET_MEM_TABLE, FE.ADD_MEM_REG, FE.REM_MEM_REG))
MAX_PENDING = 1024
#: These make the sampler look at a vring right away (the others wait for the next
#: tick: a burst of setup messages costs one wake-up, not one each).  A reset too: its
#: stop samples are read while its peers may already be taking the rings' memory back.
_VRING = frozenset(
    (FE.GET_VRING_BASE, FE.SET_VRING_KICK, FE.VRING_KICK, FE.RESET_OWNER, FE.RESET_DEVICE)
)
_U32 = struct.Struct("<I")
FELL_BEHIND = (
    "ring sampler fell behind and lost a control message of this "
    "connection: its rings are no longer sampled"
)
OVER_BUDGET = (
    "ring sampler: its fd budget ({} fds over all connections: half the soft RLIMIT_NOFILE) "
    "is used up: this connection's memory fds are closed and its rings are no longer sampled"
)


def wanted(direction: str, data: bytes | memoryview) -> bool:
    """Is this main-channel message one the sampler must see?  (A cheap test, any thread.)"""
    if not 12 <= len(data) <= MAX_WANTED_SIZE:
        return False
    req = _U32.unpack_from(data)[0]
    if direction == "f2b":
        return req in WANTED
    # replies: the device type (read without decoding); a ring given back (Sampler.released)
    return req in (FE.GET_FEATURES, FE.GET_VRING_BASE)


class Sampler(SamplerMessages):
    """Owns the guest-memory mappings of every connection; see the module doc."""

    def __init__(
        self,
        emit: Callable[[Frame], None],
        interval: float = 0.1,
        *,
        device: str | None = None,
        clock: Callable[[], int] = time.time_ns,
        fd_budget: int | None = None,
    ) -> None:
        from ..pipeline import Pipeline

        self.emit = emit
        self.interval_ns = max(int(interval * 1e9), 1_000_000)
        self.clock = clock
        self.device = device
        #: Decodes the rare memory and IOTLB messages (the others are read by hand).
        self.pipeline = Pipeline(device=device, keep_closed=False)
        self.conns: dict[int, ConnState] = {}
        self.dropped = 0
        self.frames = 0
        self._q: deque[tuple] = deque()
        #: The fds this sampler holds (queued, held back, mapped); None: sampler_fds's default.
        self.fds = FdBudget(fd_budget)
        self._closing: set[int] = set()
        self._lost_conns: dict[int, str] = {}  # conn -> the note saying why
        self._given_up: set[int] = set()  # (forwarding side: no more dups for these)
        self._ended: deque[int] = deque(maxlen=1024)  # connections closed lately
        #: conn -> GET_VRING_BASE replies that passed the proxy (counted by the forwarding
        #: thread before the front-end gets them; ConnState.released: those this thread
        #: has reached).  The reply gives the ring back: the front-end may free it (DPDK's
        #: virtio-user zeroes it on close), so a read made while the two differ may be of
        #: memory that is no ring any more (avail 256 -> 0 'moved back'): no tick is kept,
        #: and a stop sample only once its reply's base agrees with it (``_released``).
        self.released: dict[int, int] = {}
        self._emit_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the forwarding threads' side: append only ---------------------------------------
    def _put(self, item: tuple, wake: bool) -> bool:
        if len(self._q) >= MAX_QUEUE:
            self.dropped += 1
            return False
        self._q.append(item)
        if wake:
            self._wake.set()
        return True

    def _lose(self, conn: int, why: str = FELL_BEHIND) -> None:
        """A message of ``conn`` could not be queued: its rings can no longer be followed."""
        self._given_up.add(conn)
        self._lost_conns.setdefault(conn, why)  # (not the full queue: this must not fail)
        self._wake.set()

    def control(self, ts: int, conn: int, direction: Direction, data: bytes) -> None:
        """A main-channel message without fds (the caller checked :func:`wanted`)."""
        req = _U32.unpack_from(data)[0]
        if direction == "b2f" and req == FE.GET_VRING_BASE:
            self.released[conn] = self.released.get(conn, 0) + 1  # (before it is sent on)
        if not self._put(("data", ts, conn, direction, bytes(data), ()), req in _VRING):
            self._lose(conn)

    def memory(self, conn: int, ts: int, data: bytes, fds: list[int]) -> None:
        """A main-channel front-end message with fds, before the relay sends and closes them.

        Memory messages get dups of their fds (ours until the thread hands them
        to GuestMemory, which keeps its own); the others only their bytes.
        """
        if not wanted("f2b", data) or conn in self._given_up:
            return
        req = _U32.unpack_from(data)[0]
        held = None
        if req in MEMORY:
            try:  # (a region each at most: more fds are never used)
                held = self.fds.dup(conn, req, fds[:MAX_FDS])
            except OverBudget:  # (its queued dups closed now; the rest at the next drain)
                self.fds.forget(conn)
                self._lose(conn, OVER_BUDGET.format(self.fds.limit))
                return
            except OSError:
                self._lose(conn)
                return
        descs = tuple("fd" for _ in fds)
        # (memory messages wait for the next tick: no wake-up, no GIL taken per message)
        if not self._put(("data", ts, conn, "f2b", bytes(data), descs, held), req in _VRING):
            self.fds.drop(held)
            self._lose(conn)

    #: --trace-notify (dataplane/notify.py), started and stopped with the sampler.
    notifier: Notifier | None = None

    def fd_tap(self, conn: int, ts: int, data: bytes, fds: list[int]) -> list[int] | None:
        """The relay's hook for main-channel front-end messages with fds (see relay.py)."""
        self.memory(conn, ts, data, fds)
        return self.notifier.tap(conn, data, fds) if self.notifier is not None else None

    def event(self, frame: Frame) -> None:
        """open/close frames of the connections (close unmaps their memory)."""
        if frame.kind in ("open", "close") and frame.channel == "main":
            if frame.kind == "close":
                with self._emit_lock:  # no sample may follow its close frame (recorded next)
                    why = self._lost_conns.pop(frame.conn, None)
                    if why is not None:  # given up, not said yet: said before the close
                        self._say_lost(frame.conn, frame.ts_ns, why)
                    self._closing.add(frame.conn)
                self.fds.forget(frame.conn)  # (its queued dups: now, not at the next drain)
                self._given_up.discard(frame.conn)
                if self.notifier is not None:
                    self.notifier.closed(frame.conn)
            self._q.append(("event", frame))  # never refused: a close must unmap
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vuinspect-rings", daemon=True)
        self._thread.start()
        if self.notifier is not None:
            self.notifier.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Take what is queued, emit the stop samples, unmap everything."""
        if self.notifier is not None:
            self.notifier.stop(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            for conn in list(self.conns):
                self._close(conn, self.clock())
        else:  # (stuck: never leave memory mapped) the thread owns them; close anyway
            for c in self.conns.values():
                c.release()
        for item in self._q:
            if item[0] == "data" and len(item) > 6:
                self.fds.drop(item[6])
        self._q.clear()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        due = self.clock() + self.interval_ns
        while not self._stop.is_set():
            self._wake.wait(max(due - self.clock(), 0) / 1e9)
            self._wake.clear()
            try:
                self._drain()
                now = self.clock()
                if now >= due:
                    due = now + self.interval_ns
                    self._tick(now)
            except Exception as exc:  # noqa: BLE001 - a sampler bug must not touch the traffic
                self._note(0, self.clock(), f"ring sampler stopped: {exc!r}"[:300])
                for c in self.conns.values():
                    c.release()
                self.conns.clear()
                return

    # -- the sampler thread ---------------------------------------------------------------
    def _drain(self) -> None:
        q = self._q
        while self._lost_conns:
            with self._emit_lock:  # (popped and said at once, or by its close: event())
                conn, why = self._lost_conns.popitem()
                self._say_lost(conn, self.clock(), why)
            self._lost(conn, self.clock(), "")
        while q:
            item = q.popleft()
            kind = item[0]
            if kind == "data":
                self._message(*item[1:])
            elif kind == "event":
                frame = item[1]
                if frame.kind == "close":
                    self._close(frame.conn, frame.ts_ns)
                elif self.device is None:
                    device = event_info(frame).get("device")
                    if isinstance(device, str) and device:
                        self._conn(frame.conn).device = device[:16]

    def _conn(self, conn: int) -> ConnState:
        c = self.conns.get(conn)
        if c is None:
            c = self.conns[conn] = ConnState(device=self.device, fds=self.fds)
        return c

    def _message(
        self,
        ts: int,
        conn: int,
        direction: Direction,
        data: bytes,
        descs: tuple,
        held: Held | None = None,
    ) -> None:
        if direction == "b2f":  # a GET_FEATURES reply (its device type), GET_VRING_BASE's
            if _U32.unpack_from(data)[0] == FE.GET_VRING_BASE:
                self._released(self._conn(conn), conn, data)
            else:
                self._device(conn, data)
            return
        c = self._conn(conn)
        req = _U32.unpack_from(data)[0]
        dups = self.fds.claim(held)
        if dups is None:  # superseded while queued (sampler_fds.py), or its connection closed
            c.superseded(req == FE.SET_INFLIGHT_FD)
            return
        if req == FE.SET_INFLIGHT_FD:
            self._inflight(c, conn, ts, data, dups)
            return
        if req in _PENDING and not c.lost:
            if req == FE.SET_MEM_TABLE:  # a new table: the ones before it no longer matter
                c.drop_pending()
            if len(c.pending) >= MAX_PENDING:
                self.fds.close(dups)
                self._lost(conn, ts)
                return
            c.pending.append((ts, data, descs, dups))
            return
        if req == FE.IOTLB_MSG:  # rare, decoded in full
            self._feed(c, conn, ts, direction, data, descs, dups)
            return
        self.fds.close(dups)
        if not c.lost:
            self._control(c, conn, ts, req, data)

    def _feed(
        self,
        c: ConnState,
        conn: int,
        ts: int,
        direction: Direction,
        data: bytes,
        descs: tuple,
        dups: list[int],
    ) -> None:
        try:
            msgs = self.pipeline.feed(Frame(ts, conn, "main", direction, data, descs))
            if c.lost:
                return
            for m in msgs:
                if m.kind == "message" and not m.reply:
                    self._apply(c, conn, ts, m, dups)
        finally:
            self.fds.close(dups)
            if _U32.unpack_from(data)[0] != FE.IOTLB_MSG:  # (an IOTLB flood maps nothing)
                c.recount()

    def _inflight(self, c: ConnState, conn: int, ts: int, data: bytes, dups: list[int]) -> None:
        """SET_INFLIGHT_FD: map the buffer the back-end records its in-flight requests in."""
        try:
            if c.lost or len(data) < 12 + _INFLIGHT.size or not dups:
                return
            if c.inflight is not None:
                c.inflight.close()
            c.inflight = InflightRegion.open(dups[0], *_INFLIGHT.unpack_from(data, 12))
            for prob in c.inflight.problems:
                self._note(conn, ts, f"ring sampler: {prob.code}: {prob.text}")
        finally:
            self.fds.close(dups)
            c.recount()

    def _memory(self, c: ConnState, conn: int) -> None:
        """Apply the memory messages held back (in order), now that a ring needs them."""
        pending, c.pending = c.pending, []
        for i, (ts, data, descs, dups) in enumerate(pending):
            if c.lost:
                for *_, rest in pending[i:]:
                    self.fds.close(rest)
                return
            self._feed(c, conn, ts, "f2b", data, descs, dups)

    def _tick(self, now: int) -> None:
        for conn, c in list(self.conns.items()):
            if c.lost or not (c.mem.mapped or c.pending):
                continue
            for i, ring in c.rings.items():
                if ring.started:
                    self._look(c, conn, i, ring, now, None)

    def _look(
        self, c: ConnState, conn: int, i: int, ring: RingState, ts: int, why: str | None
    ) -> None:
        """Sample one vring; emit a frame if it changed, on start/stop, or as a keepalive."""
        cfg = ring.cfg
        if c.pending and not c.lost:
            self._memory(c, conn)
        if cfg is None or c.lost or not c.mem.mapped or conn in self._closing:
            return
        s = sample(c.mem, cfg, ts, ring.packed)
        late = self.released.get(conn, 0) != c.released
        if late and why != "stop":
            return  # read after a ring was given back (see ``released``): maybe no ring
        reset = why == "reset"  # a stop no reply can vouch for (sampler_messages._reset)
        call = c.call_fd(i)
        if call is not None:
            s = replace(s, call_fd=call)
        problems = list(s.problems)
        changed = True
        if ring.last is not None:
            d = diff(ring.last, s, rate_hint=ring.rate)
            changed = bool(d)
            problems += d.problems
            ring.rate = rate_hint(ring.rate, d)
        if not cfg.packed:
            problems += ring.split.update(c.mem, cfg, s)
        if reset and (problems or not follows(ring.last, s)):
            return  # maybe no ring any more: the last look stays its end
        last = ring.last
        if (
            last is not None
            and last.ok
            and s.ok
            and s.used_idx != last.used_idx
            and (s.call_fd == "none" or self.notifier is not None)
            and needs_call(last, s)
        ):
            ring.call_wait_ns = ts  # a missing call is judged from the samples that follow
        ring.last = s
        device = c.device
        keepalive = ts - ring.emitted_ns >= KEEPALIVE_NS and (
            (s.in_flight and not is_receive_queue(device, i))  # (a quiet rx queue is full)
            or (ring.call_wait_ns is not None and ts - ring.call_wait_ns <= CALL_WATCH_NS)
        )
        codes = tuple(p.code for p in problems)
        if not (changed or why in ("start", "stop", "reset") or codes != ring.codes or keepalive):
            return
        ring.codes = codes
        if why is None:
            why = "tick"
        elif reset:
            why = "stop"  # (the reader's name for a ring's last look)
        record = s.to_json()
        if problems != list(s.problems):
            record["problems"] = [p.to_json() for p in problems]
        record["event"] = why
        if reset:  # (its indices checked out; descriptors and the inflight region can't)
            self._emit_ring(conn, ts, record)
            return
        if c.inflight is not None and c.inflight.mapped:
            q = c.inflight.queue(i, cfg.packed, MAX_INFLIGHT_DESCS)
            if q.count or q.problems:
                record["inflight"] = q.to_json()
        if s.ok and s.in_flight:
            chains = in_flight_chains(
                c.mem,
                cfg,
                s,
                device,
                max_chains=MAX_CHAINS,
                max_descs=MAX_DESCS,
                tracker=ring.split if not cfg.packed else None,
            )
            if chains:
                record["chains"] = [ch.to_json() for ch in chains]
        ring.emitted_ns = ts
        if late:
            ring.held = (s, record)  # judged by its reply (_released)
            return
        self._emit_ring(conn, ts, record)

    def _emit_ring(self, conn: int, ts: int, record: dict[str, Any]) -> None:
        with self._emit_lock:
            if conn in self._closing:
                return
            self.frames += 1
            self.emit(ring_frame(ts, conn, record))

    def _released(self, c: ConnState, conn: int, data: bytes) -> None:
        """A GET_VRING_BASE reply: the stop sample held for its ring (read after the reply
        passed) is emitted if the base agrees with it, else dropped: it may have been read
        from memory the front-end had taken back (and a move 'back' is no ring's then)."""
        c.released += 1
        if len(data) < 20:
            return
        i, base = VRING_STATE.unpack_from(data, 12)
        ring = c.rings.get(i)
        if ring is None or ring.held is None:
            return
        s, record = ring.held
        ring.held = None
        backwards = any(p.get("code") == "ring_backwards" for p in record.get("problems", ()))
        if agrees_with_base(s, base) and not backwards:
            self._emit_ring(conn, s.ts_ns, record)

    def _close(self, conn: int, ts: int) -> None:
        """The connection ended (its close frame is written): unmap, sample no more."""
        self._closing.discard(conn)
        self._ended.append(conn)
        self.pipeline.forget(conn)  # (a long-running proxy: bounded by live ones)
        self.released.pop(conn, None)
        c = self.conns.pop(conn, None)
        if c is not None:
            c.release()

    def _lost(self, conn: int, ts: int, why: str = FELL_BEHIND) -> None:
        """``conn``'s rings are given up: what it holds is closed; ``why`` noted ("": said)."""
        if conn in self._ended:  # (flagged after its close was handled: nothing left)
            return
        c = self._conn(conn)
        if c.lost:
            return
        c.lost = True
        c.release()
        c.rings.clear()
        if why:
            self._note(conn, ts, why)

    def _say_lost(self, conn: int, ts: int, why: str) -> None:
        """(_emit_lock held) The note that ``conn`` is given up, unless said or closed."""
        c = self.conns.get(conn)
        if conn not in self._closing and conn not in self._ended and not (c is not None and c.lost):
            self.emit(event_frame("note", ts, conn, {"text": why}))

    def _note(self, conn: int, ts: int, text: str) -> None:
        with self._emit_lock:
            if conn not in self._closing:
                self.emit(event_frame("note", ts, conn, {"text": text}))
