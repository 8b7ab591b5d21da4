"""The one way a relay hands over what it forwarded: a FrameSink.

A Link (relay.py) calls only these three methods, on its forwarding thread,
for every frame of its pair; they must never block and must bound what they
keep.  The engine's sink is the Recorder (recorder.py: encodes, a writer
thread writes); a consumer that may be slow (a Python callable: the TUI's
live source, a test's sleepy sink) gets a FrameQueue (queue.py: a bounded
hand-off to a consumer thread); a consumer that only appends in memory (the
tests' recorders) takes them on the forwarding thread through a DirectSink.

What both bounded sinks drop when their consumer falls behind is counted per
connection by a DropLedger, and said in a note before that connection's next
frame: the traffic itself is always forwarded unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from vuinspect.frames import Channel, Direction, Frame, event_frame

#: Bytes of frames that may wait for a slow output before data frames are dropped
#: (``--capture-buffer``; the Recorder's and the FrameQueue's default).
BUDGET = 32 << 20
#: ``record(ts_ns, data)``: one fd-less data frame of a fixed (conn, channel, direction).
Lane = Callable[[int, bytes], None]
#: A data frame queued as a plain tuple, Frame's first fields (no object built while forwarding).
DataItem = tuple[int, int, Channel, Direction, bytes, tuple[str, ...]]


@runtime_checkable
class FrameSink(Protocol):
    """Where a relay's frames go (every method is called on a forwarding thread)."""

    def lane(self, conn: int, channel: Channel, direction: Direction) -> Lane:
        """The fast path of one link direction's fd-less data frames, bound once."""
        ...

    def data(
        self,
        ts: int,
        conn: int,
        channel: Channel,
        direction: Direction,
        data: bytes,
        fds: tuple[str, ...] = (),
    ) -> None:
        """Any data frame (``fds``: descriptions of the fds it carried)."""
        ...

    def event(self, frame: Frame) -> None:
        """An open, close or note frame."""
        ...


class DropLedger:
    """Data frames a sink dropped, per connection, until a note says how many.

    ``pending`` is a plain dict a fast path may test for emptiness without the lock.
    """

    def __init__(self, who: str) -> None:
        self.who = who  # what fell behind, as the note says it
        self.pending: dict[int, int] = {}
        self.dropped = 0
        self._lock = threading.Lock()

    def drop(self, conn: int | None) -> None:
        """One frame dropped; ``conn`` None: counted only (an event frame: no note follows)."""
        with self._lock:
            if conn is not None:
                self.pending[conn] = self.pending.get(conn, 0) + 1
            self.dropped += 1

    def notes(self, conn: int | None = None) -> list[Frame]:
        """The "N frames dropped" notes due (for one connection, or all), taken."""
        with self._lock:
            keys = [k for k in self.pending if conn is None or k == conn]
            counts = [(k, self.pending.pop(k)) for k in keys]
        return [
            event_frame(
                "note",
                time.time_ns(),
                c,
                {
                    "text": f"{n} frame{'s' if n != 1 else ''} dropped from the capture because "
                    f"the {self.who} fell behind (the traffic itself was forwarded unchanged)",
                    "dropped": n,
                },
            )
            for c, n in counts
        ]


class DirectSink:
    """A FrameSink that hands each frame to ``take`` on the forwarding thread itself.

    Only for a ``take`` that cannot block or grow without bound in a way that
    matters (a test's list append, an in-memory counter); anything slower goes
    through a FrameQueue.
    """

    def __init__(self, take: Callable[[Frame], object]) -> None:
        self.take = take

    def lane(self, conn: int, channel: Channel, direction: Direction) -> Lane:
        take = self.take

        def record(ts: int, data: bytes) -> None:
            take(Frame(ts, conn, channel, direction, data))

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
        self.take(Frame(ts, conn, channel, direction, data, fds))

    def event(self, frame: Frame) -> None:
        self.take(frame)
