"""Where the TUI's frames come from: a capture file (indexed, maybe still growing) or a live feed.

The app only ever asks a source for ``len(source)`` and ``source.frame(i)``
(frame number ``i + 1``), and waits on it for more; it never owns the proxy or
a file reader.  Both sources are safe to read from the decoding thread and the
UI thread at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from vuinspect.capture import (
    CaptureError,
    CaptureIndex,
    CaptureReader,
    CaptureWriter,
    build_index,
)
from vuinspect.frames import Frame, event_frame


class Source:
    """The interface the model reads (a capture file and a live feed both provide it)."""

    name: str = ""
    live: bool = False  # ages are measured against the wall clock, follow mode starts on
    #: (listen, connect) socket paths of the proxy feeding it: the title and the empty
    #: list say where it waits for its first connection.
    listening: tuple[tuple[str, str], ...] = ()
    #: Who connects to the listening socket: QEMU (the front-end), or the back-end when
    #: QEMU is the server (``--frontend connect``); the empty list's example follows it.
    peer_connects: str = "frontend"

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> Frame:
        raise NotImplementedError

    def frames_from(self, start: int) -> Iterator[Frame]:
        """Frames ``start``, ``start + 1``, ... (the decoder's sequential path)."""
        i = start
        while i < len(self):
            yield self.frame(i)
            i += 1

    @property
    def ended(self) -> bool:
        """True once no frame will ever be added."""
        return True

    @property
    def loading(self) -> bool:
        """More frames are known to exist but are not indexed yet."""
        return False

    def wait(self, have: int, timeout: float) -> None:
        """Block until there are more than ``have`` frames, the source ends, or ``timeout``."""
        time.sleep(timeout)

    def close(self) -> None:
        pass


class FileSource(Source):
    """A capture file, read through its block-offset index (TECH.md §1).

    With ``background=True`` the index is built on a thread and the first
    frames are served from memory meanwhile, so the first screen of a
    million-frame capture does not wait for the whole scan (the row count then
    jumps to the full size, as toolong's line count does while it scans).
    With ``follow=True`` the file is re-scanned for appended blocks, like
    ``tail -f`` (a capture the proxy is still writing with ``-w``).
    """

    HEAD_FRAMES = 2000

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        follow: bool = False,
        index: CaptureIndex | None = None,
        background: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.follow = follow
        self.live = follow
        self._stopped = False
        self._head: list[Frame] = []
        self._ready = threading.Event()
        self.load_error: CaptureError | None = None
        if index is not None or not background:
            self.index = index if index is not None else build_index(self.path)
            self._ready.set()
            return
        self.index = CaptureIndex(self.path)  # opens the file: errors surface here
        try:
            reader = CaptureReader(self.path)  # not pcapng at all: CaptureFormatError here
        except BaseException:
            self.index.close()
            raise
        try:
            for frame in reader:
                self._head.append(frame)
                if len(self._head) >= self.HEAD_FRAMES:
                    break
        except CaptureError:
            pass  # damage right at the start: the index scan reports it
        finally:
            reader.close()
        threading.Thread(target=self._build, name="vuinspect-index", daemon=True).start()

    def _build(self) -> None:
        try:
            self.index.update()
        except CaptureError as exc:
            self.load_error = exc
        finally:
            self._ready.set()

    @property
    def loading(self) -> bool:
        """The index is still being built (only the first frames are available)."""
        return not self._ready.is_set()

    def __len__(self) -> int:
        if self._ready.is_set():
            return len(self.index)
        return len(self._head)

    def frame(self, i: int) -> Frame:
        if not self._ready.is_set() and 0 <= i < len(self._head):
            return self._head[i]
        return self.index.frame(i)

    def frames_from(self, start: int) -> Iterator[Frame]:
        """A whole file is decoded through its own streaming reader.

        It is faster than ``index.frame`` (no lock, no seek per frame), and the
        decoding thread then shares nothing with the UI thread's row reads.
        """
        if start or self.follow:
            yield from super().frames_from(start)
            return
        reader = CaptureReader(self.path)
        try:
            yield from reader
        finally:
            reader.close()

    @property
    def ended(self) -> bool:
        return (not self.follow or self._stopped) and self._ready.is_set()

    def wait(self, have: int, timeout: float) -> None:
        if not self._ready.is_set():
            self._ready.wait(timeout)
            return
        if not self.follow:
            time.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        while not self._stopped:
            if self.index.update() or len(self.index) > have:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def close(self) -> None:
        self._stopped = True
        self._ready.wait(10)  # the scan holds the index; let it finish first
        self.index.close()


SPOOL_MAX = 4 << 30  # bytes a live view spools at most (and at most half the free space)
FRAME_OVERHEAD = 64  # pcapng block and pseudo-header bytes a frame adds to its data


def spool_budget(directory: str) -> int:
    """The bytes a live view may spool in ``directory``: ``SPOOL_MAX``, or half of what is
    free there when that is less (a tmpfs is memory; the disk is shared with -w captures)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return SPOOL_MAX
    return min(SPOOL_MAX, st.f_bavail * st.f_frsize // 2)


class LiveSource(Source):
    """Frames pushed by another thread (the proxy's feed), spooled to a capture file.

    ``push`` writes each frame to a capture (``path``, or a private temporary
    file unlinked at once) and wakes the readers; rows are read back through
    the file's :class:`CaptureIndex`, as :class:`FileSource` reads a capture.
    So memory grows by the index (8 bytes a frame), not by the frames: a proxy
    watched for days stays small, and live and offline rows are the same
    packets (a frame over 256 KiB is several, as in the written capture).
    ``push`` is thread-safe and cheap (an encode into the writer's buffer and a
    notify): call it straight from the proxy's sink.  ``end()`` says the feed
    is over (the proxy stopped).

    The spool is bounded (``budget`` bytes, :func:`spool_budget` by default): when
    the next frame would pass it, or the filesystem refuses a write, the view stops
    there and its last row is a note saying why (kept in memory: the disk may be
    full); the proxy forwards on, and its ``-w`` captures are not this spool.
    """

    live = True
    SCAN_STEP = 4 << 20  # bytes indexed between two releases of the mapping's pages

    def __init__(
        self,
        name: str = "live",
        *,
        path: str | os.PathLike[str] | None = None,
        budget: int | None = None,
        listening: Sequence[tuple[str, str]] = (),
        peer_connects: str = "frontend",
    ) -> None:
        self.name = name
        self.listening = tuple(listening)
        self.peer_connects = peer_connects
        spool_dir = None
        if path is None:
            spool_dir = tempfile.mkdtemp(prefix="vuinspect-live.")
            spool = os.path.join(spool_dir, "live.pcapng")
        else:
            spool = os.fspath(path)
        self.budget = spool_budget(os.path.dirname(spool) or ".") if budget is None else budget
        try:
            self._writer = CaptureWriter(spool)
            self.index = build_index(spool)  # the section header the writer wrote
        finally:
            if spool_dir is not None:  # open files keep it: nothing left behind, even on a crash
                with contextlib.suppress(OSError):
                    os.unlink(spool)
                os.rmdir(spool_dir)
        self._spool_dir = os.path.dirname(spool) or "."
        self._cond = threading.Condition()
        self._sync_lock = threading.Lock()
        self._pushed = 0
        self._synced = 0
        self._spooled = 0  # bytes given to the writer (an estimate: data + FRAME_OVERHEAD)
        self._ended = False
        self._closed = False
        self.stopped: Frame | None = None  # the note the view ends with, once the spool is full

    def push(self, frame: Frame) -> None:
        with self._cond:
            if self._closed or self.stopped is not None:
                return
            size = len(frame.data) + FRAME_OVERHEAD
            if self._spooled + size > self.budget:
                self._stop(frame, f"its {self.budget:,}-byte budget is used up")
                self._cond.notify_all()
                return
            try:
                self._writer.write(frame)
            except OSError as exc:
                self._stop(frame, f"writing failed: {exc.strerror or exc}")
                self._cond.notify_all()
                return
            self._spooled += size
            self._pushed += 1
            self._cond.notify_all()

    def _stop(self, frame: Frame, why: str) -> None:
        """End the view with a note dated and numbered as ``frame`` (no lock needed:
        one assignment; pushes test it under ``_cond``, readers through ``_sync``)."""
        text = (
            f"the live view stops here: its spool in {self._spool_dir} is full ({why}) after "
            f"{self._pushed:,} frames; the proxy goes on forwarding, and -w captures are not "
            "this spool"
        )
        if self.stopped is None:
            self.stopped = event_frame("note", frame.ts_ns, frame.conn, {"text": text})

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _sync(self) -> int:
        """Make what was pushed readable: flush the writer, index the new blocks."""
        if self._synced != self._pushed:
            with self._sync_lock:
                pushed = self._pushed
                if self._synced != pushed and not self._closed:
                    try:
                        self._writer.flush()
                    except OSError as exc:  # what did reach the file is still read
                        self._stop(self.frame_at_end(), f"writing failed: {exc.strerror or exc}")
                    index = self.index
                    # in steps, each step's pages let go: a feed far ahead of the decoder
                    # must not make what it wrote since resident (memory is the index)
                    while index.update(self.SCAN_STEP) and index.scanned < index.size:
                        index.release()
                    index.release()
                    self._synced = pushed
        return len(self.index) + (self.stopped is not None)

    def frame_at_end(self) -> Frame:
        """The last frame the view has (to date a note that follows it)."""
        n = len(self.index)
        return self.index.frame(n - 1) if n else Frame(time.time_ns(), 0, "main", "f2b", b"")

    def __len__(self) -> int:
        return self._sync()

    def frame(self, i: int) -> Frame:
        if self.stopped is not None and i == len(self.index):
            return self.stopped
        return self.index.frame(i)

    def frames_from(self, start: int) -> Iterator[Frame]:
        """Read on with ``pread`` in chunks (see :meth:`CaptureIndex.frames`), following the feed."""
        i = start
        while i < (n := len(self)):
            stored = len(self.index)
            yield from self.index.frames(i, min(n, stored))
            if n > stored:  # the note the view stopped with
                yield self.frame(stored)
            i = n

    @property
    def ended(self) -> bool:
        # (a stopped view has not ended: the proxy forwards on, and its requests may still
        # be answered; ending would give them missing_reply problems the wire never had)
        return self._ended and self._synced == self._pushed

    def wait(self, have: int, timeout: float) -> None:
        with self._cond:
            if self._pushed <= have and not self._ended:
                self._cond.wait(timeout)

    def close(self) -> None:
        self.end()
        with self._cond, self._sync_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):  # (a full disk: what is buffered is lost)
                self._writer.close()
            self.index.close()


class FrameListSource(Source):
    """A fixed list of frames (tests, screenshots), kept in memory."""

    def __init__(self, frames: list[Frame], name: str = "frames") -> None:
        self.name = name
        self._frames = list(frames)

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, i: int) -> Frame:
        return self._frames[i]

    def wait(self, have: int, timeout: float) -> None:
        return  # every frame is there already
