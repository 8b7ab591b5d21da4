"""CaptureReader: stream Frames out of a pcapng capture without holding the file.

Reads block by block from a path, stdin or a file object (pipes included, so a
live ``proxy -w -`` can be followed).  Damaged input never raises out of
iteration: the reader stops at the first bad block and records
``reader.error`` (offset + reason), keeping every whole frame before it.
Input that is not a vuinspect capture raises :class:`CaptureFormatError`.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.capture.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    EXPORTED_PDU_PREFIX,
    MAX_BLOCK_LEN,
    PREFIX_LEN,
    Interface,
    Section,
    epb_frame,
    linktype_refusal,
    parse_idb,
    parse_shb,
    shb_order,
    sniff,
)
from vuinspect.frames import Frame

CHUNK = 1 << 20
_MAGIC = pseudohdr.MAGIC
_VERSION = pseudohdr.VERSION
_FIXED = pseudohdr.FIXED
_FIXED_LEN = pseudohdr.FIXED_LEN
_KINDS = pseudohdr.KIND_NAMES
_CHANNELS = pseudohdr.CHANNEL_NAMES
_DIRECTIONS = pseudohdr.DIRECTION_NAMES


def _open_source(source: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, bool, str]:
    if isinstance(source, str) and source == "-":
        return sys.stdin.buffer, False, "<stdin>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return open(path, "rb", buffering=0), True, path  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureError(f"cannot open capture {path}: {exc.strerror}") from None
    return source, False, getattr(source, "name", "<file>")


class CaptureReader:
    """Iterate the Frames of a capture; see ``error`` afterwards for damage.

    Opening reads the section header, so a file that is not pcapng raises
    :class:`CaptureFormatError` here.  Packets that are not ours (other link
    types, other exported-PDU dissectors) raise it too if they come before
    any vuinspect frame; after one, they are skipped and counted in ``skipped``.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO, *, chunk_size: int = CHUNK) -> None:
        self._file, self._owned, self.name = _open_source(source)
        self._chunk = chunk_size
        read1 = getattr(self._file, "read1", None)
        self._read = read1 if read1 is not None and not self._owned else self._file.read
        self._buf = b""
        self._base = 0  # file offset of self._buf[0]
        self._eof = False
        self.error: CaptureError | None = None
        self.sections: list[Section] = []
        self.interfaces: list[Interface] = []
        self.frames_read = 0
        self.skipped = 0
        self._iterating = False
        try:
            self._check_start()
        except BaseException:
            self.close()
            raise

    # -- buffering -----------------------------------------------------------------
    def _more(self, buf: bytes, pos: int, need: int) -> bytes:
        """Return the bytes from ``pos`` on, read until at least ``need`` (fewer at EOF)."""
        parts = [buf[pos:]]
        have = len(parts[0])
        self._base += pos
        while have < need and not self._eof:
            chunk = self._read(max(self._chunk, need - have))
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _check_start(self) -> None:
        """Read enough to tell pcapng from anything else, raising CaptureFormatError."""
        self._buf = self._more(b"", 0, 12)
        why = sniff(self._buf[:12])
        if why is not None:
            raise CaptureFormatError(why, 0)
        if len(self._buf) >= 12 and shb_order(self._buf, 0) is None:
            raise CaptureFormatError("pcapng section header with a bad byte-order magic", 0)

    # -- iteration -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if self._iterating:
            raise RuntimeError("a CaptureReader can be iterated once")
        self._iterating = True
        return self._frames()

    def _fail(self, reason: str, offset: int) -> CaptureError:
        return CaptureError(reason, offset)

    def _frames(self) -> Iterator[Frame]:  # noqa: C901 - one hot loop, kept flat for speed
        buf = self._buf
        pos = 0
        section: Section | None = None
        hdr = struct.Struct("<II").unpack_from  # until a section header says otherwise
        u32 = epb = None
        ifaces: list[Interface] = []
        prefix = EXPORTED_PDU_PREFIX
        prefix_end = 28 + PREFIX_LEN
        fixed_unpack = _FIXED.unpack_from
        offset = 0
        size = len(buf)
        try:
            while True:
                if size - pos < 12:
                    buf = self._more(buf, pos, 12)
                    size = len(buf)
                    pos = 0
                    if not buf:
                        self._check_end()
                        return
                    if len(buf) < 8:
                        raise self._fail(
                            f"block at offset {self._base} cut short: {len(buf)} of 8 header bytes present",
                            self._base,
                        )
                offset = self._base + pos
                btype, blen = hdr(buf, pos)
                if btype == BT_SHB:  # the same in both byte orders: read the order, then the length
                    if size - pos < 12:
                        raise self._fail(
                            f"section header at offset {offset} cut short: {size - pos} bytes present",
                            offset,
                        )
                    order = shb_order(buf, pos)
                    if order is None:
                        raise self._fail(
                            f"section header at offset {offset} has a bad byte-order magic", offset
                        )
                    section = Section(len(self.sections), offset, order)
                    hdr, u32, epb = section.hdr.unpack_from, section.u32.unpack_from, section.epb.unpack_from
                    ifaces = section.interfaces
                    blen = hdr(buf, pos)[1]
                elif section is None:
                    raise self._fail(f"block at offset {offset} precedes any section header", offset)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK_LEN:
                    raise self._fail(f"block at offset {offset} has an invalid length {blen}", offset)
                if size - pos < blen:
                    buf = self._more(buf, pos, blen)
                    size = len(buf)
                    pos = 0
                    if len(buf) < blen:
                        raise self._fail(
                            f"block at offset {offset} cut short: header says {blen} bytes, {len(buf)} present",
                            offset,
                        )
                if u32(buf, pos + blen - 4)[0] != blen:
                    raise self._fail(
                        f"block at offset {offset}: trailing length {u32(buf, pos + blen - 4)[0]} "
                        f"does not match {blen}",
                        offset,
                    )
                if btype == BT_EPB:
                    if blen < 32:
                        raise self._fail(f"packet block at offset {offset} too short ({blen} bytes)", offset)
                    iface_id, ts_high, ts_low, caplen = epb(buf, pos + 8)
                    if iface_id < len(ifaces) and caplen <= blen - 32:
                        iface = ifaces[iface_id]
                        p = pos + prefix_end
                        if (
                            iface.ours
                            and caplen >= PREFIX_LEN + _FIXED_LEN
                            and buf[pos + 28 : p] == prefix
                        ):
                            magic, version, kind, hlen, channel, direction, conn, _, nfds = fixed_unpack(buf, p)
                            if (
                                magic == _MAGIC and version == _VERSION and hlen == _FIXED_LEN
                                and nfds == 0 and kind < 4 and channel < 2 and direction < 2
                            ):
                                ts = ts_high << 32 | ts_low
                                if not iface.native_ns:
                                    ts = iface.ts_ns(ts)
                                pos += blen
                                self.frames_read += 1
                                yield Frame(
                                    ts, conn, _CHANNELS[channel], _DIRECTIONS[direction],
                                    buf[p + _FIXED_LEN : pos - blen + 28 + caplen], (), _KINDS[kind],
                                )
                                continue
                    got = epb_frame(buf, pos, blen, section)  # the general path: fds, foreign, errors
                    pos += blen
                    if isinstance(got, str):
                        if not self.frames_read:
                            raise CaptureFormatError(got, offset)
                        self.skipped += 1
                        continue
                    self.frames_read += 1
                    yield got
                    continue
                if btype == BT_SHB:
                    parse_shb(buf, pos, blen, section)
                    self.sections.append(section)
                elif btype == BT_IDB:
                    self.interfaces.append(parse_idb(buf, pos, blen, section))
                pos += blen
        except CaptureFormatError as exc:
            if not self.frames_read:
                raise
            # after frames of ours, a bad later section header is damage, not a foreign file
            self.error = CaptureError(exc.reason, offset if exc.offset is None else exc.offset)
        except CaptureError as exc:
            self.error = exc
        except (ArithmeticError, LookupError, ValueError, struct.error) as exc:  # a last safety net
            self.error = self._fail(f"block at offset {offset} is corrupt: {exc}", offset)
        finally:
            self.close()

    def _check_end(self) -> None:
        """A file of foreign interfaces without any packet is still not ours: say so."""
        if self.frames_read or any(i.ours for i in self.interfaces):
            return
        foreign = [i for i in self.interfaces if not i.ours]
        if foreign:
            raise CaptureFormatError(linktype_refusal(foreign[0]), None)

    # -- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        if self._owned:
            self._file.close()
            self._owned = False

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(source: str | os.PathLike[str] | BinaryIO) -> Iterator[Frame]:
    """Yield every whole frame of a capture (use CaptureReader to see ``error``)."""
    reader = CaptureReader(source)
    yield from reader
