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

What waits for the writer is bounded in *bytes* (``budget``, ``--capture-buffer``):
beyond it data frames are dropped from the capture (never from the traffic)
and a note says how many.  Events (open, close, note) go in up to twice the
budget.  A stop never waits for an output more than ``STOP_S``: what could not
be written by then is counted (``unwritten``) and left behind.

Only the writer thread writes.  With ring buffers or autostop (capfile.py) it
walks the blocks one by one; with a capture filter the forwarding threads
queue the raw frames and the writer thread has them decoded, filtered and
encoded (capture/filtered.py).
Neither costs anything per message when not asked for.
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
from typing import TYPE_CHECKING

from vuinspect.capture import CaptureError
from vuinspect.capture.capfile import (
    Idb,
    Limits,
    RingFile,
    Shb,
    marked_event,
    open_fifo,
    open_target,
)
from vuinspect.capture.encoder import EPB_OVERHEAD, Encoder, new_capture_id
from vuinspect.capture.filtered import CaptureFilter
from vuinspect.dataplane.sampler import Sampler, wanted
from vuinspect.frames import Channel, Direction, Frame

from .sink import BUDGET, DataItem, DropLedger, Lane

if TYPE_CHECKING:
    from vuinspect.filter import Predicate

#: What a queued block costs beyond its own bytes (object header, list slot), counted too.
BLOCK_COST = 64
#: Bytes a viewer may lag behind before its stream is cut off (64 MiB: ~700k small messages).
FEED_LIMIT = 64 << 20
#: The longest a stop waits for the outputs to take what is still queued.
STOP_S = 1.5


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
            view = view[os.write(self.fd, view) :]

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

    def finish(self, deadline: float) -> None:
        """At the end: give the viewer until ``deadline`` to take what is still pending."""
        p = select.poll()
        p.register(self.fd, select.POLLOUT)
        while self.pending and time.monotonic() < deadline:
            if not p.poll(50):
                continue
            try:
                self.write(b"")
            except OSError:
                return


class FeedCut(OSError):
    """The viewer's stream was given up (see _Feed)."""


def _raw_cost(item: bytes | Frame | DataItem) -> int:
    """What a frame queued for the capture filter counts against the budget."""
    if isinstance(item, bytes):  # the section header
        return len(item) + BLOCK_COST
    data = item.data if type(item) is Frame else item[4]
    return len(data) + EPB_OVERHEAD + 2 * BLOCK_COST


class Recorder:
    """pcapng bytes for a ``-w`` file and/or a viewer pipe, see the module doc.

    ``data`` and ``event`` may be called from any thread; ``on_error`` gets
    one line when an output fails (the others, and the traffic, go on).
    With ``defer`` the ``-w`` target is opened only by :meth:`open` (after
    the proxy's start checks passed); ``on_info`` gets lines that are not errors.
    """

    def __init__(
        self,
        path: str | None = None,
        feed_fd: int | None = None,
        *,
        budget: int = BUDGET,
        feed_limit: int = FEED_LIMIT,
        interval: float = 0.005,
        on_error: Callable[[str], None] | None = None,
        on_info: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
        limits: Limits | None = None,
        capture_filter: str | Predicate | None = None,
        device: str | None = None,
        force: bool = False,
        defer: bool = False,
        capture_id: str | None = None,
    ) -> None:
        self.budget = budget
        #: this run's id in the section and interface blocks (tells merged runs apart)
        self.capture_id = capture_id or new_capture_id()
        self._event_cap = 2 * budget + (1 << 20)
        self.interval = interval
        self.on_error = on_error
        self.on_info = on_info
        self.on_warning = on_warning  # (default: on_error)
        #: Called (on the writer thread) when the viewer's stream is cut off.
        self.on_feed_cut: Callable[[], None] | None = None
        self._path = path
        self._force = force
        self._limits = limits if limits is not None and limits.active else None
        self._chunks: list = []  # appended by any thread, taken by the writer thread
        self._queued = 0  # bytes (plus BLOCK_COST each) in _chunks: the budget's measure
        self._encoder = Encoder(self._emit_idb, capture_id=self.capture_id)
        self._filter: CaptureFilter | None = None
        if capture_filter:
            # Frames are queued raw and encoded by the writer thread, after the filter.
            self._filter = CaptureFilter(
                capture_filter, device, Encoder(self._filter_idb, capture_id=self.capture_id)
            )
            self._filter_out: list[bytes] = []
        self._outputs: list = []
        self._ledger = DropLedger("capture writer")
        self._stop = threading.Event()
        #: Set by the writer thread once the -w outputs are finished (close() waits for it).
        self._files_done = threading.Event()
        self._thread: threading.Thread | None = None
        self._fifo: str | None = None  # a FIFO target still waiting for its reader
        self._ring: RingFile | None = None
        self._inflight: list = []  # the batch the writer thread is writing
        self.unrecordable = 0
        self.bytes_written = 0
        #: Frames still queued when a stop gave up waiting for the outputs.
        self.unwritten = 0
        #: The viewer's pipe while it is fed; ``feed_cut`` tells whether it was cut off.
        self._feed: _Feed | None = None
        self.feed_cut = False
        if feed_fd is not None:
            self._feed = _Feed(feed_fd, feed_limit)
            self._outputs.append(self._feed)
        self._chunks.append(Shb(self._encoder.shb))
        self._queued += len(self._encoder.shb) + BLOCK_COST
        if not defer:
            self.open()

    @property
    def dropped(self) -> int:
        """Frames dropped from the capture (the writer was too far behind)."""
        return self._ledger.dropped

    @property
    def filtered(self) -> int:
        """Data frames the capture filter left out."""
        return self._filter.filtered if self._filter is not None else 0

    def _emit_idb(self, block: bytes) -> None:
        if self._filter is None:
            self._chunks.append(Idb(block))
            self._queued += len(block) + BLOCK_COST

    def _filter_idb(self, block: bytes) -> None:
        self._filter_out.append(Idb(block))

    def open(self) -> None:
        """Open the ``-w`` target and write the section header: an unwritable one fails here.

        A FIFO with no reader yet is opened by the writer thread, which waits for one.
        """
        path = self._path
        try:
            if path == "-":
                self._outputs.insert(0, _Output(sys.stdout.fileno(), "<stdout>", False))
            elif path is not None and self._limits is not None:
                self._ring = RingFile(
                    path, self._limits, self._force, self._encoder.shb, self._limit_reached
                )
                self._outputs.insert(0, self._ring)
            elif path is not None:
                fd = open_target(path, self._force)
                if fd is None:
                    self._fifo = path
                    warn = self.on_warning or self.on_error  # (shown even with -q)
                    if warn is not None:
                        warn(
                            f"vuinspect proxy: waiting for a reader of the FIFO "
                            f"{path}; the capture starts when one opens it"
                        )
                    return
                self._outputs.insert(0, _Output(fd, path, True))
            self._drain(first=True)
        except (OSError, CaptureError) as exc:
            for out in self._outputs:
                out.close()
            self._outputs = []
            if not isinstance(exc, OSError):
                raise
            name = "<stdout>" if path == "-" else path
            raise CaptureError(f"cannot write capture {name}: {exc.strerror or exc}") from None

    def _limit_reached(self, why: str) -> None:
        if self.on_info is not None:
            self.on_info(
                f"vuinspect proxy: capture to {self._path} ended: {why}; forwarding continues"
            )

    # -- recording (forwarding threads) --------------------------------------------------
    #: The ring sampler (dataplane/sampler.py) fed with the main channel's control
    #: messages and the connection events; set before the relay starts.
    sampler: Sampler | None = None

    def sampled(self, frame: Frame) -> None:
        """A frame of the ring sampler (ring samples, its notes): dropped as data is."""
        if self._queued > self.budget:
            self._ledger.drop(frame.conn)
            return
        self._event(frame)

    def data(
        self,
        ts: int,
        conn: int,
        channel: Channel,
        direction: Direction,
        data: bytes,
        fds: tuple[str, ...] = (),
    ) -> None:
        sampler = self.sampler
        if sampler is not None and channel == "main" and not fds and wanted(direction, data):
            sampler.control(ts, conn, direction, data)
        if self._queued > self.budget:
            self._ledger.drop(conn)
            return
        if self._ledger.pending:
            self._note_drops(conn)
        if self._filter is not None:
            item = (ts, conn, channel, direction, data, fds)
            self._chunks.append(item)
            self._queued += _raw_cost(item)
            return
        try:
            if fds:
                block = self._encoder.frame(Frame(ts, conn, channel, direction, data, fds))
            else:
                block = self._encoder.data(ts, conn, channel, direction, data)
        except ValueError:  # a frame the format cannot hold: not the traffic's problem
            self.unrecordable += 1
            return
        self._chunks.append(block)
        self._queued += len(block) + BLOCK_COST

    def lane(self, conn: int, channel: Channel, direction: Direction) -> Lane:
        """``record(ts, data)`` for the fd-less data frames of one link direction.

        The same as ``data(ts, conn, channel, direction, data)``, with everything
        that is fixed for the direction looked up once (the forwarding fast path).
        """
        slow = self.data
        if self._filter is not None:
            return lambda ts, data: slow(ts, conn, channel, direction, data)
        packer = self._encoder.packer(conn, channel, direction)

        def record(
            ts: int,
            data: bytes,
            pack: Callable[[int, bytes], bytes] = packer,
            append: Callable[[object], None] = self._chunks.append,
            drops: dict[int, int] = self._ledger.pending,
            budget: int = self.budget,
            rec: Recorder = self,
            cost: int = BLOCK_COST,
        ) -> None:  # (bound as defaults: local reads, the cheapest in Python)
            if rec._queued > budget or drops:
                slow(ts, conn, channel, direction, data)
                return
            block = pack(ts, data)
            append(block)
            rec._queued += len(block) + cost

        sampler = self.sampler
        if sampler is None or channel != "main":
            return record
        fast, control = record, sampler.control

        def tee(ts: int, data: bytes) -> None:  # the control messages the ring sampler needs
            if wanted(direction, data):
                control(ts, conn, direction, data)
            fast(ts, data)

        return tee

    def event(self, frame: Frame) -> None:
        """Open/close/note frames are dropped only beyond twice the budget (they frame the rest)."""
        if self._ledger.pending:
            self._note_drops(frame.conn)
        if self.sampler is not None:  # (first: a close stops the connection's samples)
            self.sampler.event(frame)
        self._event(frame)

    def _event(self, frame: Frame) -> None:
        if self._queued > self._event_cap:
            self._ledger.drop(None)
            return
        if self._filter is not None:
            self._chunks.append(frame)
            self._queued += _raw_cost(frame)
            return
        try:
            block = marked_event(self._encoder.frame(frame), frame.kind, frame.conn)
        except ValueError:
            self.unrecordable += 1
            return
        self._chunks.append(block)
        self._queued += len(block) + BLOCK_COST

    def _note_drops(self, conn: int | None) -> None:
        for note in self._ledger.notes(conn):
            self._event(note)

    # -- the writer thread --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vuinspect-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._filter is not None:
            with contextlib.suppress(OSError):  # decoding here must not slow the forwarding
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        if self._fifo is not None:
            try:
                fd = open_fifo(self._fifo)
            except OSError as exc:
                if self.on_error is not None:
                    self.on_error(
                        f"vuinspect proxy: cannot write capture {self._fifo}: "
                        f"{exc.strerror}; forwarding continues"
                    )
            else:
                self._outputs.insert(0, _Output(fd, self._fifo, True))
            self._fifo = None
        # Every `interval` while frames come; backing off to 20x that when idle, so a proxy
        # left alone next to a VM for days does not wake 200 times a second for nothing.
        wait = self.interval
        while True:
            stopping = self._stop.wait(wait)
            if self._ring is not None:
                self._guard(self._ring.tick)
            if self._chunks or (self._feed is not None and self._feed.pending):
                self._drain()
                wait = self.interval
            else:
                wait = min(wait * 2, self.interval * 20)
            if stopping:
                break
        feed = self._feed
        for out in self._outputs:
            if out is not feed:
                out.close()
        self._outputs = [feed] if feed is not None else []
        self._files_done.set()
        if feed is not None:
            # The viewer's pipe gets the rest while the engine waits for the viewer, not
            # before: a viewer that stopped reading costs a stop one wait, not two in a row.
            feed.finish(self._deadline)
            feed.close()
            self._outputs = []

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except (OSError, CaptureError) as exc:
            self._failed(self._ring, exc)

    def _drain(self, first: bool = False) -> None:
        """Write what is queued, as whole blocks, one write per output and round."""
        chunks = self._chunks
        if not chunks and self._feed is not None and self._feed.pending:
            self._write_all([], b"", first)  # the viewer's pipe has room again
        while chunks:
            # Two C calls whatever the count (appends meanwhile land after the first n):
            # the GIL is held for µs, not for a Python loop over hundreds of blocks.
            n = min(len(chunks), 4096)
            parts = chunks[:n]
            del chunks[:n]
            self._inflight = parts
            if self._filter is not None:
                taken = sum(map(_raw_cost, parts))
                parts = self._filtered(parts)
                buf = b"".join(parts)
            else:
                buf = b"".join(parts)
                taken = len(buf) + n * BLOCK_COST
            self._write_all(parts, buf, first)
            self._inflight = []
            self._queued = 0 if not chunks else self._queued - taken  # (resynced when empty)
            self.bytes_written += len(buf)

    def _filtered(self, items: list) -> list[bytes]:
        flt, out = self._filter, self._filter_out
        for i, item in enumerate(items):
            if type(item) is Shb:
                out.append(item)
            else:
                flt.blocks(item, out)  # type: ignore[union-attr]  # only called with a filter
            if i % 16 == 15:
                time.sleep(0)  # forwarding threads waiting for the GIL go first
        self._filter_out = []
        return out

    def _write_all(self, parts: list, buf: bytes, first: bool) -> None:
        ring = self._ring
        for out in list(self._outputs):
            try:
                if ring is not None and out is ring:
                    ring.write_blocks(parts)
                else:
                    out.write(buf)
            except (OSError, CaptureError) as exc:  # (a ring's next file may fail to open)
                if first and not out.quiet:
                    raise
                self._failed(out, exc)

    def _failed(self, out: object, exc: Exception) -> None:
        if out not in self._outputs:
            return
        self._outputs.remove(out)
        out.close()  # type: ignore[attr-defined]  # one of _outputs (checked above)
        if out is self._feed:
            self._feed = None
            self.feed_cut = isinstance(exc, FeedCut)
            if self.feed_cut and self.on_feed_cut is not None:
                self.on_feed_cut()
        elif self.on_error is not None:
            self.on_error(f"vuinspect proxy: capture stopped ({exc}); forwarding continues")

    _deadline = 0.0

    def close(self, timeout: float = STOP_S) -> None:
        """Write what was recorded, then close the outputs (call after the proxy stopped).

        Waits at most ``timeout``: an output that does not take the rest by then
        (a pipe nobody reads, a FIFO nobody opened) is left behind, and what it
        did not get is counted in ``unwritten``.  Returns once the ``-w`` outputs
        are finished; the viewer's pipe is given the rest by the writer thread
        until the same deadline, while the caller waits for the viewer.
        """
        self._note_drops(None)
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        thread = self._thread
        if thread is None:  # never started: write from here (a test, or a failed start)
            self._deadline = time.monotonic()
            self._run_final()
            return
        if not self._files_done.wait(timeout + 0.2):
            pending = list(self._inflight) + list(self._chunks)
            self.unwritten = sum(1 for c in pending if type(c) not in (Shb, Idb))

    def _run_final(self) -> None:
        try:
            self._drain()
        finally:
            for out in self._outputs:
                out.close()
            self._outputs = []
