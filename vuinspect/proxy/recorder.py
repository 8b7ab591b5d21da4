"""Capture for the forwarding engine: encoded where it happens, written by another thread.

Why not a queue and a consumer thread that encodes: a consumer holds the GIL
while it encodes a batch, and a forwarding thread woken by a reply then waits
for it (Python's ``sleep(0)`` does not hand the GIL over: the releasing thread
takes it back before the woken one runs).  So the forwarding thread encodes
each frame itself, into memory only, and a writer thread wakes every few ms to
hand whole blocks to the ``-w`` file and the viewer's pipe with the GIL
released.  The same bytes go to both: one encoding, two destinations.

The blocks come from the same Encoder CaptureWriter uses (vuinspect/capture/
encoder.py; tests/proxy/test_recorder.py compares the bytes); its ``lane`` fast
path costs a data frame ~0.4 µs instead of ~1.4 µs through a Frame, and every
µs here is on the way of a reply.

When the writer falls behind (a slow disk, a stalled viewer) by more than
``limit`` blocks, data frames are dropped from the capture (never from the
traffic) and a note says how many, as FrameQueue does for in-process sinks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable

from vuinspect.capture import CaptureError
from vuinspect.capture.encoder import EPB_OVERHEAD, PAD, Encoder
from vuinspect.capture.pcapng import (
    BT_EPB,
    EPB_FLAGS,
)
from vuinspect.capture.writer import open_capture_file
from vuinspect.frames import Frame, event_frame

#: Blocks (about one per frame) the writer thread may lag behind before frames are dropped.
LIMIT = 65536
#: Bytes a viewer may lag behind before its stream is cut off (64 MiB: ~700k small messages).
FEED_LIMIT = 64 << 20


class _Output:
    """One destination of the byte stream: a capture file, written with blocking writes."""

    quiet = False  # a failure is reported

    def __init__(self, fd: int, name: str, owned: bool) -> None:
        self.fd = fd
        self.name = name
        self.owned = owned

    def write(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class _Feed(_Output):
    """The viewer's pipe: never waited for, so a slow viewer never slows the file capture.

    What does not fit into the pipe waits here; a viewer more than ``limit``
    bytes behind is cut off (its stream ends; it says so), because it could
    never catch up anyway.  A viewer that went away is not an error.
    """

    quiet = True

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(fd, "<viewer pipe>", True)
        os.set_blocking(fd, False)
        self.limit = limit
        self.pending: collections.deque[memoryview] = collections.deque()
        self.backlog = 0

    def write(self, buf: bytes) -> None:
        """Write what fits; raises BrokenPipeError (gone) or FeedCut (too far behind)."""
        if buf:
            self.pending.append(memoryview(buf))
            self.backlog += len(buf)
        pending = self.pending
        while pending:
            view = pending[0]
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                break
            self.backlog -= n
            if n < len(view):
                pending[0] = view[n:]
                break
            pending.popleft()
        if self.backlog > self.limit:
            raise FeedCut(f"the viewer fell more than {self.limit >> 20} MiB behind")


    def finish(self, timeout: float = 10.0) -> None:
        """At the end: give the viewer a bounded time to take what is still pending."""
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(self.fd, select.POLLOUT)
        while self.pending and time.monotonic() < deadline:
            if not p.poll(100):
                continue
            try:
                self.write(b"")
            except OSError:
                return


class FeedCut(OSError):
    """The viewer's stream was given up (see _Feed)."""


class Recorder:
    """pcapng bytes for a ``-w`` file and/or a viewer pipe, see the module doc.

    ``data`` and ``event`` may be called from any thread; ``on_error`` gets
    one line when an output fails (the others, and the traffic, go on).
    """

    def __init__(self, path: str | None = None, feed_fd: int | None = None, *,
                 limit: int = LIMIT, feed_limit: int = FEED_LIMIT, interval: float = 0.005,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.interval = interval
        self.on_error = on_error
        #: Called (on the writer thread) when the viewer's stream is cut off.
        self.on_feed_cut: Callable[[], None] | None = None
        self._chunks: list[bytes] = []  # appended by any thread, taken by the writer thread
        self._encoder = Encoder(self._chunks.append)
        self._outputs: list[_Output] = []
        self._lock = threading.Lock()
        self._drops: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.unrecordable = 0
        self.bytes_written = 0
        if path == "-":
            self._outputs.append(_Output(sys.stdout.fileno(), "<stdout>", False))
        elif path is not None:
            self._outputs.append(_Output(open_capture_file(path), path, True))
        #: The viewer's pipe while it is fed; ``feed_cut`` tells whether it was cut off.
        self._feed: _Feed | None = None
        self.feed_cut = False
        if feed_fd is not None:
            self._feed = _Feed(feed_fd, feed_limit)
            self._outputs.append(self._feed)
        self._chunks.append(self._encoder.shb)
        try:
            self._drain(first=True)  # the section header: an unwritable target fails here, at once
        except OSError as exc:
            for out in self._outputs:
                out.close()
            name = "<stdout>" if path == "-" else path
            raise CaptureError(f"cannot write capture {name}: {exc.strerror or exc}") from None

    # -- recording (forwarding threads) --------------------------------------------------
    def data(self, ts: int, conn: int, channel: str, direction: str, data: bytes,
             fds: tuple[str, ...] = ()) -> None:
        chunks = self._chunks
        if len(chunks) > self.limit:
            with self._lock:
                self._drops[conn] = self._drops.get(conn, 0) + 1
                self.dropped += 1
            return
        if self._drops:
            self._note_drops(conn)
        try:
            if fds:
                block = self._encoder.frame(Frame(ts, conn, channel, direction, data, fds))  # type: ignore[arg-type]
            else:
                block = self._encoder.data(ts, conn, channel, direction, data)
        except ValueError:  # a frame the format cannot hold: not the traffic's problem
            self.unrecordable += 1
            return
        chunks.append(block)

    def lane(self, conn: int, channel: str, direction: str) -> Callable[[int, bytes], None]:
        """``record(ts, data)`` for the fd-less data frames of one link direction.

        The same as ``data(ts, conn, channel, direction, data)``, with everything
        that is fixed for the direction looked up once (the forwarding fast path).
        """
        iface, prefix, flags = self._encoder.lane(conn, channel, direction)
        plen = len(prefix)
        head, tail = self._encoder.head, self._encoder.tail
        chunks = self._chunks
        append = chunks.append
        join = b"".join
        drops = self._drops
        limit = self.limit
        slow = self.data

        def record(ts: int, data: bytes) -> None:
            if len(chunks) > limit or drops:
                slow(ts, conn, channel, direction, data)
                return
            caplen = plen + len(data)
            pad = -caplen & 3
            blen = caplen + pad + EPB_OVERHEAD
            append(join((head(BT_EPB, blen, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, caplen),
                         prefix, data, PAD[pad], tail(EPB_FLAGS, 4, flags, 0, 0, blen))))

        return record

    def event(self, frame: Frame) -> None:
        """Open/close/note frames are never dropped (they frame everything else)."""
        if self._drops:
            self._note_drops(frame.conn)
        self._event(frame)

    def _event(self, frame: Frame) -> None:
        try:
            self._chunks.append(self._encoder.frame(frame))
        except ValueError:
            self.unrecordable += 1

    def _note_drops(self, conn: int | None) -> None:
        with self._lock:
            keys = [k for k in self._drops if conn is None or k == conn]
            counts = [(k, self._drops.pop(k)) for k in keys]
        for c, n in counts:
            text = (f"{n} frame{'s' if n != 1 else ''} dropped from the capture because the "
                    "capture writer fell behind (the traffic itself was forwarded unchanged)")
            self._event(event_frame("note", time.time_ns(), c, {"text": text, "dropped": n}))

    # -- the writer thread --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vuinspect-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Every `interval` while frames come; backing off to 20x that when idle, so a proxy
        # left alone next to a VM for days does not wake 200 times a second for nothing.
        wait = self.interval
        while not self._stop.wait(wait):
            if self._chunks or (self._feed is not None and self._feed.pending):
                self._drain()
                wait = self.interval
            else:
                wait = min(wait * 2, self.interval * 20)

    def _drain(self, first: bool = False) -> None:
        """Write what is queued, as whole blocks, one write per output and round."""
        chunks = self._chunks
        if not chunks and self._feed is not None and self._feed.pending:
            self._write_all(b"", first)  # the viewer's pipe has room again
        while chunks:
            # Two C calls whatever the count (appends meanwhile land after the first n):
            # the GIL is held for µs, not for a Python loop over hundreds of blocks.
            n = min(len(chunks), 4096)
            parts = chunks[:n]
            del chunks[:n]
            buf = b"".join(parts)
            self._write_all(buf, first)
            self.bytes_written += len(buf)

    def _write_all(self, buf: bytes, first: bool) -> None:
        for out in list(self._outputs):
            try:
                out.write(buf)
            except OSError as exc:
                if first and not out.quiet:
                    raise
                self._outputs.remove(out)
                out.close()
                if out is self._feed:
                    self._feed = None
                    self.feed_cut = isinstance(exc, FeedCut)
                    if self.feed_cut and self.on_feed_cut is not None:
                        self.on_feed_cut()
                elif self.on_error is not None:
                    self.on_error(f"vuinspect proxy: capture stopped ({exc}); "
                                  "forwarding continues")

    def close(self) -> None:
        """Write everything recorded so far, then close the outputs (call after the proxy stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._drops:
            self._note_drops(None)
        self._drain()
        if self._feed is not None:
            self._feed.finish()
        for out in self._outputs:
            out.close()
        self._outputs = []
