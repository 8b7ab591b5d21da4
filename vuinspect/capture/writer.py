"""CaptureWriter: frames to a pcapng file, fast, nanosecond-exact, whole blocks only.

Blocks are packed by hand (dpkt's Writer forces microseconds, TECH.md §3) and
buffered; each flush is one write of whole blocks, so a proxy killed with
SIGKILL leaves at worst a cut-short last block, which the reader reports and
survives.  Files are created 0600 because they hold guest memory contents.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import threading
from typing import BinaryIO

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError
from vuinspect.capture.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    BYTE_ORDER_MAGIC,
    EPB_DIRECTION_FLAGS,
    EPB_FLAGS,
    EXPORTED_PDU_PREFIX,
    IF_DESCRIPTION,
    IF_NAME,
    IF_TSRESOL,
    LINKTYPE_WIRESHARK_UPPER_PDU,
    PREFIX_LEN,
    SHB_USERAPPL,
    TSRESOL_NS,
)
from vuinspect.frames import Frame, event_info

FLUSH_AT = 64 * 1024
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")
# EPB bytes beyond the packet data: 28 header + epb_flags option (8) + end of options (4) + trailer (4).
_EPB_OVERHEAD = 28 + 8 + 4 + 4


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("vuinspect")
    except Exception:  # noqa: BLE001 - not installed: any label will do
        return "dev"


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


def pack_block(order: str, btype: int, body: bytes) -> bytes:
    """A whole pcapng block: type, total length, ``body``, total length again."""
    blen = len(body) + 12
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def pack_options(order: str, options: list[tuple[int, bytes]]) -> bytes:
    """pcapng options, each padded to 32 bits, then the end-of-options marker."""
    out = []
    for code, value in options:
        out.append(struct.pack(order + "HH", code, len(value)) + value + _PAD[-len(value) & 3])
    out.append(struct.pack(order + "HH", 0, 0))
    return b"".join(out)


def idb_block(order: str, conn: int, channel: str, label: str | None) -> bytes:
    """The interface description block of one (connection, channel)."""
    name = label or f"conn {conn}"
    body = struct.pack(order + "HHI", LINKTYPE_WIRESHARK_UPPER_PDU, 0, 0)
    body += pack_options(order, [
        (IF_NAME, name.encode("utf-8", "replace")),
        (IF_DESCRIPTION, f"conn {conn} {channel}".encode()),
        (IF_TSRESOL, bytes([TSRESOL_NS])),
    ])
    return pack_block(order, BT_IDB, body)


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
        order = ">" if big_endian else "<"
        self._order = order
        self._head = struct.Struct(order + "7I")
        self._tail = struct.Struct(order + "HHIHHI")  # epb_flags option, end of options, trailer
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        self._owned = False
        self.name = self._open(target)
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self._ifaces: dict[tuple[int, str], int] = {}
        self._labels: dict[int, str] = {}
        self._closed = False
        self.frames_written = 0
        self.bytes_written = 0
        self._append(self._shb())
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
    def _shb(self) -> bytes:
        body = struct.pack(self._order + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        body += pack_options(self._order, [(SHB_USERAPPL, f"vuinspect {_version()}".encode())])
        return pack_block(self._order, BT_SHB, body)

    def _new_iface(self, conn: int, channel: str) -> int:
        """Write the IDB for (conn, channel); names come from the conn's open event."""
        iface = len(self._ifaces)
        self._ifaces[(conn, channel)] = iface
        self._append(idb_block(self._order, conn, channel, self._labels.get(conn)))
        return iface

    def _append(self, block: bytes) -> None:
        self._parts.append(block)
        self._size += len(block)

    # -- public API ----------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        """Append one frame; raises ValueError for a frame that cannot be recorded."""
        header = pseudohdr.encode_header(frame, self.big_endian)
        data = frame.data
        caplen = PREFIX_LEN + len(header) + len(data)
        pad = -caplen & 3
        blen = caplen + pad + _EPB_OVERHEAD
        ts = frame.ts_ns
        if not 0 <= ts < 1 << 64:
            raise ValueError(f"timestamp {ts} ns outside the 64-bit pcapng range")
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed CaptureWriter")
            kind = frame.kind
            if kind == "open":
                label = event_info(frame).get("label")
                if isinstance(label, str) and label:
                    self._labels[frame.conn] = label
            channel = frame.channel if kind == "data" else "main"
            iface = self._ifaces.get((frame.conn, channel))
            if iface is None:
                iface = self._new_iface(frame.conn, channel)
            parts = self._parts
            parts.append(self._head.pack(BT_EPB, blen, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, caplen))
            parts.append(EXPORTED_PDU_PREFIX)
            parts.append(header)
            parts.append(data)
            parts.append(_PAD[pad])
            parts.append(self._tail.pack(EPB_FLAGS, 4, EPB_DIRECTION_FLAGS[frame.direction], 0, 0, blen))
            self._size += blen
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
