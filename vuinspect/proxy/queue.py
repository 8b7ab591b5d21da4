"""A bounded hand-off from the forwarding threads to a possibly slow sink.

Decoding, capture writing and the UI run on one consumer thread, never on a
forwarding thread: a forwarding thread only appends to a deque.  Data frames
go in as plain tuples ``(ts_ns, conn, channel, direction, data, fds)`` (one C
call, no object built on the forwarding path); the consumer turns them into
:class:`Frame` s.  When the consumer falls behind and the queue is full, data
frames are dropped *from the capture* (the traffic itself was already
forwarded) and counted; a note frame saying how many were lost goes into the
queue as soon as there is room again, before the next frame of that
connection.  Event frames (open, close, note) are never dropped: there are few
of them and they frame everything else.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback
from collections.abc import Callable

from vuinspect.frames import Frame, event_frame

_STOP = object()
#: A data frame as the forwarding threads queue it: Frame's first six fields.
DataItem = tuple  # (ts_ns, conn, channel, direction, data, fds)


class FrameQueue:
    """Feeds ``sink`` from a consumer thread; ``put`` never blocks.

    With ``sink=None`` nothing is queued and no thread runs (``active`` is
    False): a proxy that neither shows nor captures anything pays nothing.

    The forwarding fast path (relay.py) appends to ``items`` itself while
    ``len(items) < maxsize`` and ``pending_drops`` is empty, and calls
    :meth:`put_data` otherwise; ``items`` and ``pending_drops`` are never
    replaced, so it may keep references to them.
    """

    def __init__(
        self,
        sink: Callable[[Frame], None] | None,
        maxsize: int = 65536,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._sink = sink
        self.active = sink is not None
        #: Called on the consumer thread whenever the queue runs empty (flush outputs there).
        self.on_idle = on_idle
        #: How long the consumer lets frames collect while traffic flows (seconds).
        self.batch_interval = 0.005
        self.items: collections.deque[object] = collections.deque()
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self.pending_drops: dict[int, int] = {}  # conn -> data frames dropped, not yet noted
        self._thread: threading.Thread | None = None
        #: Frames handed to the sink, frames dropped from the capture, sink errors.
        self.delivered = 0
        self.dropped = 0
        self.sink_errors = 0

    def start(self) -> None:
        if not self.active:
            return
        self._thread = threading.Thread(target=self._consume, name="vuinspect-sink", daemon=True)
        self._thread.start()

    def put(self, frame: Frame) -> bool:
        """Queue ``frame`` for the sink; False if it had to be dropped (queue full)."""
        if not self.active:
            return True
        if frame.kind == "data":
            return self.put_data(
                (frame.ts_ns, frame.conn, frame.channel, frame.direction, frame.data, frame.fds)
            )
        # Events always go in, after the drop note of their connection.
        if self.pending_drops and frame.conn in self.pending_drops:
            self._flush_drops(frame.conn)
        self.items.append(frame)
        return True

    def put_data(self, item: DataItem) -> bool:
        """Queue one data frame given as a tuple; False if it was dropped (queue full)."""
        if not self.active:
            return True
        conn = item[1]
        items = self.items
        if self.pending_drops and conn in self.pending_drops and len(items) < self.maxsize:
            self._flush_drops(conn)
        if len(items) >= self.maxsize:
            with self._lock:
                self.pending_drops[conn] = self.pending_drops.get(conn, 0) + 1
                self.dropped += 1
            return False
        items.append(item)
        return True

    def _flush_drops(self, conn: int | None = None) -> None:
        """Queue the "N frames dropped" notes (for one connection, or all)."""
        with self._lock:
            keys = [k for k in self.pending_drops if conn is None or k == conn]
            counts = [(k, self.pending_drops.pop(k)) for k in keys]
        for c, n in counts:
            text = (
                f"{n} frame{'s' if n != 1 else ''} dropped from the capture because the "
                "consumer fell behind (the traffic itself was forwarded unchanged)"
            )
            self.items.append(event_frame("note", time.time_ns(), c, {"text": text, "dropped": n}))

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver everything queued so far, then stop the consumer thread."""
        if not self.active:
            return
        if self.pending_drops:
            self._flush_drops()
        self.items.append(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def backlog(self) -> int:
        return len(self.items)

    def _consume(self) -> None:
        """Deliver frames in batches, polling; never woken by a ``put``.

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
        assert sink is not None  # start() runs this thread only when active
        interval = self.batch_interval
        sleep = time.sleep
        frame_type = Frame
        tuple_type = tuple
        while True:
            if not items:
                self._idle()
                sleep(interval)
                continue
            n = 0
            while items:
                item = popleft()
                if item is _STOP:
                    self._idle()
                    return
                if type(item) is tuple_type:
                    item = frame_type(*item)
                try:
                    # items holds Frames, data tuples (turned into Frames above) and
                    # _STOP (returned above): only a Frame reaches here.  No cast():
                    # a call per frame on the delivery loop.
                    sink(item)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - a sink's bug is reported, never stops delivery
                    self._error()
                else:
                    self.delivered += 1
                n += 1
                if n % 16 == 0:
                    sleep(0)  # release the GIL: forwarding threads come first

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
