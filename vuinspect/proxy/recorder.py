"""Capture for the forwarding engine: encoded where it happens, written by another thread.

Why not a queue and a consumer thread that encodes: a consumer holds the GIL
while it encodes a batch, and a forwarding thread woken by a reply then waits
for it (Python's ``sleep(0)`` does not hand the GIL over: the releasing thread
takes it back before the woken one runs).  Encoding one frame costs ~1 µs, so
the forwarding thread does it itself, into memory only (a CaptureWriter whose
target is this object), and a writer thread wakes every few ms to hand whole
blocks to the ``-w`` file and the viewer's pipe with the GIL released.  The
same bytes go to both: one encoding, two destinations.

When the writer falls behind (a slow disk, a stalled viewer) by more than
``limit`` bytes, data frames are dropped from the capture (never from the
traffic) and a note says how many, as FrameQueue does for in-process sinks.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Callable

from vuinspect.capture import CaptureError, CaptureWriter
from vuinspect.frames import Frame, event_frame

#: Encoded bytes the writer thread may lag behind before frames are dropped.
LIMIT = 64 << 20


def open_capture_file(path: str) -> int:
    """Create ``path`` for a capture the way CaptureWriter does: 0600, never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise CaptureError(f"refusing to write capture {path}: it is a symbolic link") from None
        raise CaptureError(f"cannot create capture {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
    return fd


class _Output:
    """One destination of the byte stream."""

    def __init__(self, fd: int, name: str, owned: bool, quiet: bool) -> None:
        self.fd = fd
        self.name = name
        self.owned = owned
        self.quiet = quiet  # the viewer's pipe: a reader that went away is not an error

    def write(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class Recorder:
    """pcapng bytes for a ``-w`` file and/or a viewer pipe, see the module doc.

    ``data`` and ``event`` may be called from any thread; ``on_error`` gets
    one line when an output fails (the others, and the traffic, go on).
    """

    name = "<recorder>"  # as a CaptureWriter target

    def __init__(self, path: str | None = None, feed_fd: int | None = None, *,
                 limit: int = LIMIT, interval: float = 0.005,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.interval = interval
        self.on_error = on_error
        self._chunks: collections.deque[bytes] = collections.deque()
        self._in = 0  # bytes handed over by the CaptureWriter (only under its lock)
        self._out = 0  # bytes the writer thread has taken (only on that thread)
        self._outputs: list[_Output] = []
        self._lock = threading.Lock()
        self._drops: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.unrecordable = 0
        if path == "-":
            self._outputs.append(_Output(sys.stdout.fileno(), "<stdout>", False, False))
        elif path is not None:
            self._outputs.append(_Output(open_capture_file(path), path, True, False))
        if feed_fd is not None:
            self._outputs.append(_Output(feed_fd, "<viewer pipe>", True, True))
        self.writer = CaptureWriter(self)  # type: ignore[arg-type]  # writes the section header
        try:
            self._drain(first=True)
        except OSError as exc:
            for out in self._outputs:
                out.close()
            name = "<stdout>" if path == "-" else path
            raise CaptureError(f"cannot write capture {name}: {exc.strerror or exc}") from None

    # -- CaptureWriter target ----------------------------------------------------------
    def write(self, buf: bytes) -> int:
        self._chunks.append(buf)
        self._in += len(buf)
        return len(buf)

    def flush(self) -> None:
        pass

    # -- recording (forwarding threads) --------------------------------------------------
    def data(self, ts: int, conn: int, channel: str, direction: str, data: bytes,
             fds: tuple[str, ...] = ()) -> None:
        if self._in - self._out > self.limit:
            with self._lock:
                self._drops[conn] = self._drops.get(conn, 0) + 1
                self.dropped += 1
            return
        if self._drops:
            self._note_drops(conn)
        self._write(Frame(ts, conn, channel, direction, data, fds))  # type: ignore[arg-type]

    def event(self, frame: Frame) -> None:
        """Open/close/note frames are never dropped (they frame everything else)."""
        if self._drops:
            self._note_drops(frame.conn)
        self._write(frame)

    def _write(self, frame: Frame) -> None:
        try:
            self.writer.write(frame)
        except ValueError:  # a frame the format cannot hold, or after close(): not traffic's problem
            self.unrecordable += 1

    def _note_drops(self, conn: int | None) -> None:
        with self._lock:
            keys = [k for k in self._drops if conn is None or k == conn]
            counts = [(k, self._drops.pop(k)) for k in keys]
        for c, n in counts:
            text = (f"{n} frame{'s' if n != 1 else ''} dropped from the capture because the "
                    "capture writer fell behind (the traffic itself was forwarded unchanged)")
            self._write(event_frame("note", time.time_ns(), c, {"text": text, "dropped": n}))

    # -- the writer thread --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vuinspect-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush_and_drain()

    def _flush_and_drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.writer.flush()  # what the forwarding threads encoded since the last round
        self._drain()

    def _drain(self, first: bool = False) -> None:
        chunks = self._chunks
        while chunks:
            buf = chunks.popleft()
            for out in list(self._outputs):
                try:
                    out.write(buf)
                except OSError as exc:
                    if first and not out.quiet:
                        raise
                    self._outputs.remove(out)
                    out.close()
                    if not out.quiet and self.on_error is not None:
                        self.on_error(f"vuinspect proxy: capture stopped ({exc}); "
                                      "forwarding continues")
            self._out += len(buf)

    def close(self) -> None:
        """Write everything recorded so far, then close the outputs (call after the proxy stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._drops:
            self._note_drops(None)
        with contextlib.suppress(OSError):
            self.writer.close()
        self._drain()
        for out in self._outputs:
            out.close()
        self._outputs = []
