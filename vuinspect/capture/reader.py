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
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import BinaryIO, Protocol

import dpkt

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.capture.pcapng import (
    EPB_OVERHEAD,
    EXPORTED_PDU_PREFIX,
    MAX_BLOCK_LEN,
    MAX_CAPLEN,
    OPT_COMMENT,
    PREFIX_LEN,
    Blocks,
    Interface,
    Section,
    epb_frame,
    is_pcap,
    linktype_refusal,
    packet_frame,
    pcap_header,
    shb_order,
    sniff,
)
from vuinspect.frames import Frame

_NO_EPB = struct.Struct("<IIIII").unpack_from  # replaced by the section's before any packet

CHUNK = 1 << 20
_MAGIC = pseudohdr.MAGIC
_VERSION = pseudohdr.VERSION
_FIXED = pseudohdr.FIXED
_FIXED_LEN = pseudohdr.FIXED_LEN
_KINDS = pseudohdr.KIND_NAMES
_NKINDS = len(_KINDS)
_CHANNELS = pseudohdr.CHANNEL_NAMES
_DIRECTIONS = pseudohdr.DIRECTION_NAMES


class ByteSource(Protocol):
    """A stream to read a capture from besides a binary file (``read1`` is used if it has one)."""

    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def _open_source(
    source: str | os.PathLike[str] | BinaryIO | ByteSource,
) -> tuple[ByteSource, bool, str]:
    if isinstance(source, str) and source == "-":
        return sys.stdin.buffer, False, "<stdin>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return open(path, "rb", buffering=0), True, path  # closed by close()
        except OSError as exc:
            raise CaptureError(f"cannot open capture {path}: {exc.strerror}") from None
    return source, False, getattr(source, "name", "<file>")


class CaptureReader:
    """Iterate the Frames of a capture; see ``error`` afterwards for damage.

    Opening reads the section header, so a file that is neither pcapng nor
    classic pcap of link type 252 raises :class:`CaptureFormatError` here.
    Packets that are not ours (other link types, other exported-PDU
    dissectors) raise it too if they come before any vuinspect frame; after
    one, they are skipped and counted in ``skipped``.  Packets a snap length
    cut are read with ``Frame.truncated`` set; those cut inside our own header
    are counted in ``cut``.  Merged captures (``mergecap``, ``cat``) get
    distinct connection numbers (pcapng.Origins, docs/capture-format.md §5).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO | ByteSource,
        *,
        chunk_size: int = CHUNK,
    ) -> None:
        self._file, self._owned, self.name = _open_source(source)
        self._chunk = chunk_size
        read1 = getattr(self._file, "read1", None)
        self._read = read1 if read1 is not None and not self._owned else self._file.read
        self._buf = b""
        self._base = 0  # file offset of self._buf[0]
        self._eof = False
        self.error: CaptureError | None = None
        self._blocks = Blocks()
        self.sections: list[Section] = self._blocks.sections
        self.interfaces: list[Interface] = self._blocks.interfaces
        self.frames_read = 0
        self.skipped = 0
        self.cut = 0
        self._iterating = False
        self._pcap = False
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
            try:
                chunk = self._read(max(self._chunk, need - have))
            except OSError as exc:  # /proc/self/mem, a directory, EIO: one line, not a traceback
                raise CaptureError(
                    f"cannot read capture {self.name}: {exc.strerror or exc}", self._base + have
                ) from None
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _check_start(self) -> None:
        """Read enough to tell pcapng from anything else, raising CaptureFormatError."""
        self._buf = self._more(b"", 0, 24)
        if is_pcap(self._buf):
            self._open_pcap()
            return
        why = sniff(self._buf[:12])
        if why is not None:
            raise CaptureFormatError(why, 0)
        if len(self._buf) >= 12 and shb_order(self._buf, 0) is None:
            raise CaptureFormatError("pcapng section header with a bad byte-order magic", 0)

    def _open_pcap(self) -> None:
        """Classic pcap: dpkt's reader, fed the bytes already read and then the file."""
        head, read = self._buf, self._read
        self._buf = b""

        class Source:
            """Whole reads for dpkt (a pipe gives partial ones); says if the last came up short."""

            name = self.name
            short = False
            pos = 0  # bytes handed to dpkt so far: a record's packet starts 16 after its header

            def read(self, n: int) -> bytes:
                nonlocal head
                if n > MAX_BLOCK_LEN:  # a lying record length: not buffered (as in the index)
                    at = self.pos - 16
                    raise CaptureError(
                        f"packet record at offset {at} has an invalid length {n}", at
                    )
                parts = [head[:n]]
                head = head[n:]
                have = len(parts[0])
                while have < n:
                    try:
                        chunk = read(n - have)
                    except OSError as exc:
                        raise CaptureError(
                            f"cannot read capture {self.name}: {exc.strerror or exc}"
                        ) from None
                    if not chunk:
                        break
                    parts.append(chunk)
                    have += len(chunk)
                self.short = have < n
                self.pos += have
                return b"".join(parts)

        pcap_header(head[:24])  # link type 252 or a one-line refusal (the same text as the index)
        try:
            self._pcap_source = Source()
            self._pcap_reader = dpkt.pcap.Reader(self._pcap_source)
        except (ValueError, dpkt.Error) as exc:
            raise CaptureFormatError(
                f"classic pcap (libpcap) file with a bad header: {exc}", 0
            ) from None
        self._pcap = True

    # -- iteration -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if self._iterating:
            raise RuntimeError("a CaptureReader can be iterated once")
        self._iterating = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:  # one hot loop, kept flat for speed
        if self._pcap:
            yield from self._pcap_frames()
            return
        blocks = self._blocks
        origins = blocks.origins
        buf = self._buf
        start = 0
        prefix = EXPORTED_PDU_PREFIX
        prefix_end = 28 + PREFIX_LEN
        min_caplen = PREFIX_LEN + _FIXED_LEN
        fixed_unpack = _FIXED.unpack_from
        overhead = EPB_OVERHEAD
        current: Section | None = None
        epb: Callable[..., tuple[int, ...]] = _NO_EPB
        low = 0  # where an option code's low byte is (a comment's code is 1): its byte order
        ifaces: list[Interface] = []
        try:
            while True:
                for pos, blen, section in blocks.walk(buf, start, len(buf), self._base):
                    if section is not current:
                        current, epb, ifaces = section, section.epb.unpack_from, section.interfaces
                        low = 0 if section.order == "<" else 1
                    iface_id, ts_high, ts_low, caplen, olen = epb(buf, pos + 8)
                    # fast path: whole packet, standard tags, no fds, no options but epb_flags
                    # (what fits where it goes may be a short comment: not that)
                    padded = caplen + 3 & ~3
                    if (
                        caplen == olen
                        and iface_id < len(ifaces)
                        and min_caplen <= caplen
                        and blen <= padded + overhead
                        and (blen < padded + 36 or buf[pos + 28 + padded + low] != OPT_COMMENT)
                    ):
                        iface = ifaces[iface_id]
                        p = pos + prefix_end
                        if iface.ours and buf[pos + 28 : p] == prefix:
                            magic, version, kind, hlen, channel, direction, conn, _, nfds = (
                                fixed_unpack(buf, p)
                            )
                            if (
                                magic == _MAGIC
                                and version == _VERSION
                                and hlen == _FIXED_LEN
                                and nfds == 0
                                and kind < _NKINDS
                                and channel < 2
                                and direction < 2
                            ):
                                ts = ts_high << 32 | ts_low
                                if not iface.native_ns:
                                    ts = iface.ts_ns(ts)
                                if origins.multi:
                                    conn = origins.conn(iface.origin, conn)
                                self.frames_read += 1
                                yield Frame(
                                    ts,
                                    conn,
                                    _CHANNELS[channel],
                                    _DIRECTIONS[direction],
                                    buf[p + _FIXED_LEN : pos + 28 + caplen],
                                    (),
                                    _KINDS[kind],
                                )
                                continue
                    got = epb_frame(
                        buf, pos, blen, section, self._base
                    )  # the general path: fds, foreign, cut, errors
                    if got is None:
                        self.cut += 1
                        continue
                    if isinstance(got, str):
                        if not self.frames_read:
                            raise CaptureFormatError(got, self._base + pos)
                        self.skipped += 1
                        continue
                    if origins.multi:
                        got.conn = origins.conn(ifaces[iface_id].origin, got.conn)
                    self.frames_read += 1
                    yield got
                start = blocks.pos
                if self._eof:
                    if start < len(buf):
                        raise blocks.cut_short(buf, start, len(buf), self._base)
                    self._check_end()
                    return
                buf = self._more(buf, start, blocks.need if start < len(buf) else 12)
                start = 0
        except CaptureFormatError as exc:
            if not self.frames_read:
                raise
            # after frames of ours, a bad later section header is damage, not a foreign file
            offset = self._base + blocks.pos
            self.error = CaptureError(exc.reason, offset if exc.offset is None else exc.offset)
        except CaptureError as exc:
            self.error = exc
        except (ArithmeticError, LookupError, ValueError, struct.error) as exc:  # a last safety net
            offset = self._base + blocks.pos
            self.error = CaptureError(f"block at offset {offset} is corrupt: {exc}", offset)
        finally:
            self.close()

    def _pcap_frames(self) -> Iterator[Frame]:
        """Classic pcap (``editcap -F pcap``), link type 252, through dpkt's pcap reader.

        dpkt does not give a packet's original length: one exactly as long as
        a snap length below the standard maximum counts as cut.
        """
        reader = self._pcap_reader
        snaplen = reader.snaplen
        offset = 24
        try:
            for ts, pkt in reader:
                if self._pcap_source.short:  # the file ends inside this record
                    raise CaptureError(
                        f"packet record at offset {offset} cut short: "
                        f"{len(pkt)} bytes of its packet present",
                        offset,
                    )
                ns = (
                    int(ts * 1_000_000_000)
                    if isinstance(ts, Decimal)
                    else round(ts * 1_000_000) * 1000
                )
                olen = len(pkt) + 1 if len(pkt) >= snaplen and snaplen < MAX_CAPLEN else len(pkt)
                got = packet_frame(pkt, 0, len(pkt), olen, ns, offset)
                offset += 16 + len(pkt)
                if got is None:
                    self.cut += 1
                    continue
                if isinstance(got, str):
                    if not self.frames_read:
                        raise CaptureFormatError(got, offset)
                    self.skipped += 1
                    continue
                self.frames_read += 1
                yield got
        except CaptureFormatError as exc:
            if not self.frames_read:
                raise
            self.error = CaptureError(exc.reason, exc.offset)
        except CaptureError as exc:
            self.error = exc
        except dpkt.NeedData:
            self.error = CaptureError(f"packet record at offset {offset} cut short", offset)
        except (ArithmeticError, LookupError, ValueError, struct.error, dpkt.Error) as exc:
            self.error = CaptureError(f"packet record at offset {offset} is corrupt: {exc}", offset)
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
