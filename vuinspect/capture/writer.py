"""CaptureWriter: frames to a pcapng file, fast, nanosecond-exact, whole blocks only.

Blocks come from the Encoder (encoder.py, shared with the proxy's Recorder) and are
buffered; each flush is one write of whole blocks, so a proxy killed with
SIGKILL leaves at worst a cut-short last block, which the reader reports and
survives.  Files are created 0600 because they hold guest memory contents.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from typing import BinaryIO

from vuinspect.capture.encoder import Encoder
from vuinspect.capture.errors import CaptureError
from vuinspect.frames import Frame

FLUSH_AT = 64 * 1024


def open_capture_file(path: str) -> int:
    """Create ``path`` for a capture: 0600 (it holds guest data), never through a symlink."""
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


class CaptureWriter:
    """Write :class:`Frame` s as a vuinspect pcapng capture.

    ``target`` is a path (created 0600, never through a symlink), ``"-"`` for
    stdout, or a binary file object (not closed by :meth:`close`).  Call
    :meth:`flush` when a live reader should see what was written so far;
    otherwise data reaches the target every ~64 KiB and at :meth:`close`.
    Thread-safe: the proxy may write from several relay threads.
    """

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, *, big_endian: bool = sys.byteorder == "big") -> None:
        self.big_endian = big_endian
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        self._owned = False
        self.name = self._open(target)
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self._encoder = Encoder(self._append, big_endian)  # interface blocks go straight in
        self._closed = False
        self.frames_written = 0
        self.bytes_written = 0
        self._append(self._encoder.shb)
        try:
            self.flush()
        except OSError as exc:  # /dev/full, a full disk, a closed pipe: one clear error
            self._closed = True
            if self._owned and self._fd is not None:
                os.close(self._fd)
            raise CaptureError(f"cannot write capture {self.name}: {exc.strerror or exc}") from None

    # -- opening -----------------------------------------------------------------
    def _open(self, target: str | os.PathLike[str] | BinaryIO) -> str:
        if isinstance(target, str) and target == "-":
            self._file = sys.stdout.buffer
            return "<stdout>"
        if isinstance(target, (str, os.PathLike)):
            path = os.fspath(target)
            fd = open_capture_file(path)
            self._fd = fd
            self._owned = True
            return path
        self._file = target
        return getattr(target, "name", "<file>")

    # -- blocks --------------------------------------------------------------------
    def _append(self, block: bytes) -> None:
        self._parts.append(block)
        self._size += len(block)

    # -- public API ----------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        """Append one frame; raises ValueError for a frame that cannot be recorded."""
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed CaptureWriter")
            self._append(self._encoder.frame(frame))
            self.frames_written += 1
            if self._size >= FLUSH_AT:
                self._flush_locked()

    def flush(self) -> None:
        """Hand everything written so far to the target, as whole blocks in one write."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._parts:
            return
        buf = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self._fd is not None:
            view = memoryview(buf)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        else:
            assert self._file is not None
            self._file.write(buf)
            flush = getattr(self._file, "flush", None)
            if flush is not None:
                flush()
        self.bytes_written += len(buf)

    def close(self) -> None:
        """Flush and close the file we opened (a caller's file object stays open)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
            finally:
                self._closed = True
                if self._owned and self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
