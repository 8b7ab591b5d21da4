"""A bounded hand-off from the forwarding threads to a possibly slow sink.

Decoding, capture writing and the UI run on one consumer thread, never on a
forwarding thread: a forwarding thread only does a non-blocking ``put``.  When
the consumer falls behind and the queue is full, data frames are dropped *from
the capture* (the traffic itself was already forwarded) and counted; a note
frame saying how many were lost goes into the queue as soon as there is room
again, before the next frame of that connection.  Event frames (open, close,
note) are never dropped: there are few of them and they frame everything else.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable

from vuinspect.frames import Frame, event_frame

_STOP = object()


class FrameQueue:
    """Feeds ``sink`` from a consumer thread; ``put`` never blocks."""

    def __init__(self, sink: Callable[[Frame], None], maxsize: int = 65536,
                 on_idle: Callable[[], None] | None = None) -> None:
        self._sink = sink
        #: Called on the consumer thread whenever the queue runs empty (flush outputs there).
        self.on_idle = on_idle
        #: How long the consumer lets frames collect while traffic flows (seconds).
        self.batch_interval = 0.005
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._qsize = self._q.qsize
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._pending_drops: dict[int, int] = {}  # conn -> data frames dropped, not yet noted
        self._thread: threading.Thread | None = None
        #: Frames handed to the sink, frames dropped from the capture, sink errors.
        self.delivered = 0
        self.dropped = 0
        self.sink_errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._consume, name="vuinspect-sink", daemon=True)
        self._thread.start()

    def put(self, frame: Frame) -> bool:
        """Queue ``frame`` for the sink; False if it had to be dropped (queue full)."""
        is_data = frame.kind == "data"
        # Events always go in, so their drop note goes in first; data only if there is room.
        if (self._pending_drops and frame.conn in self._pending_drops
                and (not is_data or self._qsize() < self.maxsize)):
            self._flush_drops(frame.conn)
        if is_data and self._qsize() >= self.maxsize:
            with self._lock:
                self._pending_drops[frame.conn] = self._pending_drops.get(frame.conn, 0) + 1
                self.dropped += 1
            return False
        self._q.put(frame)
        return True

    def _flush_drops(self, conn: int | None = None) -> None:
        """Queue the "N frames dropped" notes (for one connection, or all)."""
        with self._lock:
            keys = [k for k in self._pending_drops if conn is None or k == conn]
            counts = [(k, self._pending_drops.pop(k)) for k in keys]
        for c, n in counts:
            text = (
                f"{n} frame{'s' if n != 1 else ''} dropped from the capture because the "
                "consumer fell behind (the traffic itself was forwarded unchanged)"
            )
            self._q.put(event_frame("note", time.time_ns(), c, {"text": text, "dropped": n}))

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver everything queued so far, then stop the consumer thread."""
        if self._pending_drops:
            self._flush_drops()
        self._q.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def backlog(self) -> int:
        return self._qsize()

    def _consume(self) -> None:
        """Deliver frames in batches, polling; never woken by a ``put``.

        A blocking ``get`` would make every forwarded message wake this thread,
        which then competes with the forwarding threads for the CPU and the GIL
        exactly while a reply is on its way (measured: tens of µs per round trip
        on 2 cores).  Instead the thread sleeps ``batch_interval`` whenever the
        queue is empty and drains it when it wakes; while draining it lets any
        forwarding thread that is waiting for the GIL go first every few frames.
        """
        get_nowait = self._q.get_nowait
        sink = self._sink
        interval = self.batch_interval
        sleep = time.sleep
        empty = queue.Empty
        while True:
            try:
                item = get_nowait()
            except empty:
                self._idle()
                sleep(interval)
                continue
            n = 0
            while True:
                if item is _STOP:
                    self._idle()
                    return
                try:
                    sink(item)  # type: ignore[arg-type]
                except Exception:
                    self._error()
                else:
                    self.delivered += 1
                n += 1
                if n % 16 == 0:
                    sleep(0)  # release the GIL: forwarding threads come first
                try:
                    item = get_nowait()
                except empty:
                    break

    def _idle(self) -> None:
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:
                self._error()

    def _error(self) -> None:
        self.sink_errors += 1
        if self.sink_errors <= 3:
            print("vuinspect: error in frame consumer (forwarding continues):", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
