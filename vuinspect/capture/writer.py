"""CaptureWriter: frames to a pcapng file, fast, nanosecond-exact, whole blocks only.

Blocks come from the Encoder (encoder.py, shared with the proxy's Recorder) and are
buffered; each flush is one write of whole blocks, so a proxy killed with
SIGKILL leaves at worst a cut-short last block, which the reader reports and
survives.  Files are created 0600 because they hold guest memory contents.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import struct
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO

from vuinspect.capture import pseudohdr
from vuinspect.capture.encoder import Encoder, comment_options, pack_options
from vuinspect.capture.errors import CaptureError
from vuinspect.capture.pcapng import MAX_CAPLEN, PREFIX_LEN
from vuinspect.frames import Frame
from vuinspect.render import safe_text

FLUSH_AT = 64 * 1024


def _comment_text(comment: str) -> str:
    """A comment as written: each line escaped (render.safe_text) as interface names are.

    Wireshark shows a packet comment raw, and a comment may come from an earlier
    capture; the line breaks stay (readers join a packet's comments with newlines).
    """
    return "\n".join(safe_text(line) for line in comment.split("\n"))


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

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        big_endian: bool = sys.byteorder == "big",
        capture_id: str | None = None,
    ) -> None:
        self.big_endian = big_endian
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        self._owned = False
        self.name = self._open(target)
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        # interface blocks go straight in; capture_id: see Encoder (the proxy's runs have one)
        self._encoder = Encoder(self._append, big_endian, capture_id)
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

    def _patched(self, block: bytes, frame: Frame) -> bytes:
        """Add what the Encoder does not pack: an ``opt_comment``, a snap-length cut."""
        order = ">" if self.big_endian else "<"
        if frame.truncated:  # original length = captured + left out, as the capture said
            caplen = struct.unpack_from(order + "I", block, 20)[0]
            olen = min(caplen + frame.truncated, 0xFFFFFFFF)
            block = block[:24] + struct.pack(order + "I", olen) + block[28:]
        if frame.comment:
            opt = pack_options(order, comment_options(_comment_text(frame.comment)))[:-4]
            blen = len(block) + len(opt)
            block = (
                block[:4]
                + struct.pack(order + "I", blen)
                + block[8:-8]
                + opt
                + block[-8:-4]
                + struct.pack(order + "I", blen)
            )
        return block

    # -- public API ----------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        """Append one frame; raises ValueError for a frame that cannot be recorded.

        A data frame too long for one packet that Wireshark accepts (MAX_CAPLEN,
        256 KiB) becomes several packets of the same stream, which the framer
        joins again; an event frame that long is cut to a note saying so.
        """
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed CaptureWriter")
            for piece in _pieces(frame):
                block = self._encoder.frame(piece)
                if piece.comment or piece.truncated:
                    block = self._patched(block, piece)
                self._append(block)
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


def _pieces(frame: Frame) -> Iterator[Frame]:
    """``frame`` as packets of at most MAX_CAPLEN bytes (fds and comment on the last)."""
    room = MAX_CAPLEN - PREFIX_LEN
    if len(frame.data) + pseudohdr.FIXED_LEN + 2 * len(frame.fds) + 4096 <= room:  # the usual case
        yield frame
        return
    last_room = room - len(pseudohdr.encode_header(frame))
    if len(frame.data) <= last_room:
        yield frame
        return
    if frame.kind != "data":  # event JSON cannot be split: keep a note of what it was
        text = frame.data[:4096].decode("utf-8", "replace")
        data = json.dumps({"text": text, "truncated": len(frame.data)}).encode()
        yield dataclasses.replace(frame, data=data)
        return
    data = frame.data
    head = len(data) - last_room
    step = room - pseudohdr.FIXED_LEN
    for at in range(0, head, step):
        yield Frame(
            frame.ts_ns, frame.conn, frame.channel, frame.direction, data[at : min(at + step, head)]
        )
    yield dataclasses.replace(frame, data=data[head:])
