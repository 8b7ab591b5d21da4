"""A bounded hand-off from the forwarding threads to a possibly slow consumer.

The FrameSink (sink.py) for a consumer given as a callable (the TUI's live
source, a test's sink): decoding and the UI run on one consumer thread, never
on a forwarding thread, which only appends to a deque.  Data frames go in as
plain tuples ``(ts_ns, conn, channel, direction, data, fds)`` (no object built
on the forwarding path); the consumer turns them into :class:`Frame` s.  What
waits is bounded in bytes (``budget``, as the Recorder's ``--capture-buffer``)
and in count (``maxsize``); beyond either, data frames are dropped *from the
capture* (the traffic itself was already forwarded) and counted; a note saying
how many were lost goes in as soon as there is room again, before the next
frame of that connection.  Event frames (open, close, note) are dropped only
beyond twice the budget: there are few of them and they frame everything else.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback
from collections.abc import Callable

from vuinspect.frames import Channel, Direction, Frame

from .sink import BUDGET, DropLedger, Lane

_STOP = object()
#: What a queued frame costs beyond its data (the tuple or Frame, a deque slot), counted too.
ITEM_COST = 128


class FrameQueue:
    """A FrameSink that feeds ``sink`` from a consumer thread; nothing here blocks.

    The byte count ``_queued`` is kept without a lock, as the Recorder's: a
    lost update between two forwarding threads errs by one frame, and the
    consumer resets it whenever the queue runs empty.
    """

    def __init__(
        self,
        sink: Callable[[Frame], None],
        maxsize: int = 65536,
        on_idle: Callable[[], None] | None = None,
        budget: int = BUDGET,
    ) -> None:
        self._sink = sink
        #: Called on the consumer thread whenever the queue runs empty (flush outputs there).
        self.on_idle = on_idle
        #: How long the consumer lets frames collect while traffic flows (seconds).
        self.batch_interval = 0.005
        self.items: collections.deque[object] = collections.deque()
        self.maxsize = maxsize
        self.budget = budget
        self._event_cap = 2 * budget + (1 << 20)
        self._queued = 0  # bytes (plus ITEM_COST each) in items
        self._ledger = DropLedger("consumer")
        self._thread: threading.Thread | None = None
        #: Frames handed to the sink, sink errors.
        self.delivered = 0
        self.sink_errors = 0

    @property
    def dropped(self) -> int:
        """Frames dropped from the capture (the consumer was too far behind)."""
        return self._ledger.dropped

    def start(self) -> None:
        self._thread = threading.Thread(target=self._consume, name="vuinspect-sink", daemon=True)
        self._thread.start()

    # -- FrameSink (forwarding threads) ----------------------------------------------------
    def lane(self, conn: int, channel: Channel, direction: Direction) -> Lane:
        slow = self.data
        items = self.items
        append = items.append
        maxsize, budget = self.maxsize, self.budget
        pending = self._ledger.pending
        q = self

        def record(ts: int, data: bytes) -> None:
            if q._queued > budget or pending or len(items) >= maxsize:
                slow(ts, conn, channel, direction, data)
                return
            append((ts, conn, channel, direction, data, ()))
            q._queued += len(data) + ITEM_COST

        return record

    def data(
        self,
        ts: int,
        conn: int,
        channel: Channel,
        direction: Direction,
        data: bytes,
        fds: tuple[str, ...] = (),
    ) -> None:
        if self._queued > self.budget or len(self.items) >= self.maxsize:
            self._ledger.drop(conn)
            return
        if self._ledger.pending:
            self._note_drops(conn)
        self.items.append((ts, conn, channel, direction, data, fds))
        self._queued += len(data) + ITEM_COST

    def event(self, frame: Frame) -> None:
        if self._ledger.pending:
            self._note_drops(frame.conn)
        self._event(frame)

    def _event(self, frame: Frame) -> None:
        if self._queued > self._event_cap:
            self._ledger.drop(None)
            return
        self.items.append(frame)
        self._queued += len(frame.data) + ITEM_COST

    def _note_drops(self, conn: int | None) -> None:
        for note in self._ledger.notes(conn):
            self._event(note)

    # -- the consumer thread -----------------------------------------------------------------
    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver everything queued so far, then stop the consumer thread."""
        self._note_drops(None)
        self.items.append(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def backlog(self) -> int:
        return len(self.items)

    def _consume(self) -> None:
        """Deliver frames in batches, polling; never woken by a producer.

        A blocking ``get`` would make every forwarded message wake this thread,
        which then competes with the forwarding threads for the CPU and the GIL
        exactly while a reply is on its way (measured: tens of µs per round trip
        on 2 cores).  Instead the thread sleeps ``batch_interval`` whenever the
        queue is empty and drains it when it wakes; while draining it lets any
        forwarding thread that is waiting for the GIL go first every few frames.
        """
        items = self.items
        popleft = items.popleft
        sink = self._sink
        interval = self.batch_interval
        sleep = time.sleep
        frame_type = Frame
        tuple_type = tuple
        while True:
            if not items:
                self._queued = 0  # (resynced: see the class doc)
                self._idle()
                sleep(interval)
                continue
            n = taken = 0
            while items:
                item = popleft()
                if item is _STOP:
                    self._idle()
                    return
                if type(item) is tuple_type:
                    item = frame_type(*item)
                taken += len(item.data) + ITEM_COST  # type: ignore[attr-defined]  # a Frame: see below
                try:
                    # items holds Frames, data tuples (turned into Frames above) and
                    # _STOP (returned above): only a Frame reaches here.  No cast():
                    # a call per frame on the delivery loop.
                    sink(item)  # type: ignore[arg-type]  # a Frame, see above
                except Exception:  # noqa: BLE001 - a sink's bug is reported, never stops delivery
                    self._error()
                else:
                    self.delivered += 1
                n += 1
                if n % 16 == 0:
                    self._queued -= taken
                    taken = 0
                    sleep(0)  # release the GIL: forwarding threads come first
            self._queued -= taken

    def _idle(self) -> None:
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:  # noqa: BLE001 - a sink's bug is reported, never stops delivery
                self._error()

    def _error(self) -> None:
        self.sink_errors += 1
        if self.sink_errors <= 3:
            print("vuinspect: error in frame consumer (forwarding continues):", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
