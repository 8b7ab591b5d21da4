"""CaptureIndex: the byte offset of every frame of a capture, for random access.

The TUI shows a million-frame capture by decoding only the rows on screen
(TECH.md §1): it needs ``len(index)`` and ``index.frame(i)``, not a list of
Frames.  Offsets live in an ``array('Q')`` (8 bytes a frame); frames are read
back through an mmap.  :meth:`CaptureIndex.update` picks up blocks appended
since the last call, so a capture still being written can be followed.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterator

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.capture.pcapng import (
    EXPORTED_PDU_PREFIX,
    MAX_BLOCK_LEN,
    PREFIX_LEN,
    Blocks,
    Buffer,
    Interface,
    PcapHeader,
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

_U32_BE = struct.Struct(">I")


def got_iface(mm: Buffer, pos: int, section: Section) -> int:
    """The interface id of the EPB at ``pos``."""
    return section.u32.unpack_from(mm, pos + 8)[0]


class CaptureIndex:
    """Offsets of the frames of one capture file, plus its interfaces and any damage.

    The scan checks block framing, interfaces, the exported-PDU tags and the
    pseudo-header magic; the rest of a frame is checked when :meth:`frame`
    reads it, which raises :class:`CaptureError` for a damaged one.

    ``error`` holds the :class:`CaptureError` that stopped the last scan (a
    block still being written looks the same as a cut-short one; the next
    :meth:`update` retries it).  Truncating or replacing the file while it is
    indexed is not supported: the mapping would go stale.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureError(f"cannot open capture {self.path}: {exc.strerror}") from None
        self.offsets = array("Q")
        self._blocks = Blocks()
        self.sections: list[Section] = self._blocks.sections
        self._section_starts: list[int] = []
        self.interfaces: list[Interface] = self._blocks.interfaces
        self.error: CaptureError | None = None
        self.skipped = 0
        self.cut = 0  # packets a snap length cut inside our pseudo-header: not indexed
        self._mm: mmap.mmap | None = None
        self._size = 0
        self._end = 0  # offset just after the last whole block scanned
        self._pcap: PcapHeader | None = None  # a classic pcap file: its header
        self._lock = threading.Lock()

    # -- scanning ------------------------------------------------------------------
    def update(self, max_bytes: int | None = None) -> int:
        """Index blocks appended since the last call; returns how many frames were added.

        ``max_bytes`` bounds one call (blocks starting in the next ``max_bytes``
        bytes), so a UI thread can index a huge file in steps and show progress:
        loop while ``index.scanned < index.size`` and ``index.error`` is None.
        """
        with self._lock:
            size = os.fstat(self._file.fileno()).st_size
            if size < self._size:
                self.error = CaptureError(
                    f"capture shrank from {self._size} to {size} bytes while indexed", size
                )
                return 0
            if size > self._size:
                if self._mm is not None:
                    self._mm.close()
                self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self._size = size
            if self._mm is None:
                return 0
            before = len(self.offsets)
            self.error = None
            if self._end == 0 and is_pcap(self._mm[:4]):
                self._pcap = pcap_header(self._mm[:24])
                self._end = 24
            if self._end == 0:
                why = sniff(self._mm[:12])
                if why is None and size >= 12 and shb_order(self._mm, 0) is None:
                    why = "pcapng section header with a bad byte-order magic"
                if why is not None:
                    raise CaptureFormatError(why, 0)
            try:
                scan = self._scan if self._pcap is None else self._scan_pcap
                scan(None if max_bytes is None else self._end + max_bytes)
            except CaptureError as exc:
                if isinstance(exc, CaptureFormatError) and not self.offsets:
                    raise
                if exc.offset is None:  # a bad later section header: damage at that block
                    exc = CaptureError(exc.reason, self._end)
                self.error = exc
            return len(self.offsets) - before

    def _scan(self, limit: int | None) -> None:
        mm = self._mm
        assert mm is not None
        end = self._size
        blocks = self._blocks
        origins = blocks.origins
        offsets = self.offsets
        add = offsets.append
        # The exported-PDU tags plus our magic and version: one compare per packet.
        prefix = EXPORTED_PDU_PREFIX + pseudohdr.MAGIC + bytes([pseudohdr.VERSION])
        prefix_len = len(prefix)
        min_caplen = PREFIX_LEN + pseudohdr.FIXED_LEN
        conn_at = 28 + PREFIX_LEN + 8
        stop = end if limit is None else min(limit, end)
        nsections = len(self.sections)
        try:
            for pos, blen, section in blocks.walk(mm, self._end, end, 0, stop):
                if len(self.sections) != nsections:  # a new section header was parsed
                    self._section_starts += [s.offset for s in self.sections[nsections:]]
                    nsections = len(self.sections)
                iface_id, _, _, caplen, _ = section.epb.unpack_from(mm, pos + 8)
                ifaces = section.interfaces
                if (
                    min_caplen <= caplen <= blen - 32
                    and iface_id < len(ifaces)
                    and ifaces[iface_id].ours
                    and mm[pos + 28 : pos + 28 + prefix_len] == prefix
                ):
                    add(pos)
                    if origins.multi:  # claim the connection number in file order, as the reader
                        origins.conn(
                            ifaces[iface_id].origin, _U32_BE.unpack_from(mm, pos + conn_at)[0]
                        )
                else:
                    self._odd_packet(mm, pos, blen, section, bool(offsets))
            pos = blocks.pos
            if len(self.sections) != nsections:
                self._section_starts += [s.offset for s in self.sections[nsections:]]
            if pos < stop:
                raise blocks.cut_short(mm, pos, end)
            if pos >= end and not offsets and not any(i.ours for i in self.interfaces):
                foreign = [i for i in self.interfaces if not i.ours]
                if foreign:
                    raise CaptureFormatError(linktype_refusal(foreign[0]), None)
        finally:
            self._end = blocks.pos

    def _scan_pcap(self, limit: int | None) -> None:
        """Classic pcap: 16-byte record headers, each packet checked as it is indexed."""
        mm = self._mm
        assert mm is not None and self._pcap is not None
        rec = struct.Struct(self._pcap.order + "IIII").unpack_from
        end = self._size
        pos = self._end
        stop = end if limit is None else min(limit, end)
        try:
            while pos < stop and pos + 16 <= end:
                _, _, caplen, olen = rec(mm, pos)
                if caplen > MAX_BLOCK_LEN:
                    raise CaptureError(
                        f"packet record at offset {pos} has an invalid length {caplen}", pos
                    )
                if pos + 16 + caplen > end:
                    break
                got = packet_frame(mm, pos + 16, pos + 16 + caplen, olen, 0, pos)
                if got is None:
                    self.cut += 1
                elif isinstance(got, str):
                    if not self.offsets:
                        raise CaptureFormatError(got, pos)
                    self.skipped += 1
                else:
                    self.offsets.append(pos)
                pos += 16 + caplen
            if pos < stop:
                raise CaptureError(
                    f"packet record at offset {pos} cut short: {end - pos} bytes present", pos
                )
        finally:
            self._end = pos

    def _pcap_frame(self, off: int) -> Frame | str | None:
        mm = self._mm
        assert mm is not None and self._pcap is not None
        sec, frac, caplen, olen = struct.unpack_from(self._pcap.order + "IIII", mm, off)
        return packet_frame(
            mm,
            off + 16,
            off + 16 + caplen,
            olen,
            sec * 1_000_000_000 + frac * self._pcap.frac_ns,
            off,
        )

    def _odd_packet(
        self, mm: mmap.mmap, pos: int, blen: int, section: Section, have_frames: bool
    ) -> None:
        """An EPB off the fast path: ours after all (other tag layout), cut, foreign, or damaged."""
        got = epb_frame(mm, pos, blen, section)  # raises CaptureError if ours but damaged
        if got is None:
            self.cut += 1
        elif isinstance(got, str):
            if not have_frames:
                raise CaptureFormatError(got, pos)
            self.skipped += 1
        else:
            self.offsets.append(pos)
            origins = self._blocks.origins
            if origins.multi:
                origins.conn(section.interfaces[got_iface(mm, pos, section)].origin, got.conn)

    # -- access --------------------------------------------------------------------
    @property
    def size(self) -> int:
        """File size seen by the last :meth:`update`."""
        return self._size

    @property
    def scanned(self) -> int:
        """Bytes indexed so far (whole blocks)."""
        return self._end

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> Frame:
        """Read frame ``i`` (negative counts from the end) straight from the file."""
        with self._lock:
            off = self.offsets[i]
            mm = self._mm
            assert mm is not None
            if self._pcap is not None:
                got = self._pcap_frame(off)
                if not isinstance(got, Frame):
                    raise CaptureError(
                        f"frame {i} at offset {off}: {got or 'cut by the snap length'}", off
                    )
                return got
            return self._epb(mm, off, 0, i)

    def frames(self, start: int, stop: int, chunk: int = 1 << 20) -> Iterator[Frame]:
        """Frames ``start`` to ``stop - 1``, read with ``pread`` a chunk of blocks at a time.

        For a sequential pass over a big or growing capture (a live view's
        decoder): pages read through the mapping stay in this process's RSS
        until it is unmapped, so a whole pass through it would make the
        process as big as the file.
        """
        fd = self._file.fileno()
        offsets = self.offsets
        i = start
        while i < stop:
            if self._pcap is not None:
                yield self.frame(i)
                i += 1
                continue
            first = offsets[i]
            j = i + 1
            while j < stop and offsets[j] - first < chunk:
                j += 1
            end = offsets[j] if j < len(offsets) else self._end
            buf = os.pread(fd, end - first, first)
            for k in range(i, j):
                yield self._epb(buf, offsets[k] - first, first, k)
            i = j

    def _epb(self, buf: Buffer, pos: int, base: int, i: int) -> Frame:
        """The frame of the indexed block at ``pos`` in ``buf`` (file offset ``base + pos``)."""
        off = base + pos
        section = self.sections[bisect_right(self._section_starts, off) - 1]
        blen = section.u32.unpack_from(buf, pos + 4)[0]
        got = epb_frame(buf, pos, blen, section, base)
        if not isinstance(got, Frame):  # cannot happen for an indexed offset
            raise CaptureError(f"frame {i} at offset {off}: {got or 'cut by the snap length'}", off)
        origins = self._blocks.origins
        if origins.multi:
            got.conn = origins.conn(
                section.interfaces[got_iface(buf, pos, section)].origin, got.conn
            )
        return got

    def release(self) -> None:
        """Let go of the mapping's resident pages (the page cache keeps them).

        Pages the scan or :meth:`frame` touched count in this process's RSS
        until unmapped; a capture followed for days then costs its offsets,
        not its size.  Cheap where nothing is resident.
        """
        with self._lock:
            if self._mm is not None:
                self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        with self._lock:
            if self._mm is not None:
                self._mm.close()
                self._mm = None
            self._file.close()

    def __enter__(self) -> CaptureIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_index(path: str | os.PathLike[str]) -> CaptureIndex:
    """Index a capture file; raises CaptureFormatError if it is not a vuinspect capture.

    An empty file (a live capture not yet started) gives an empty index that
    :meth:`CaptureIndex.update` fills later.
    """
    index = CaptureIndex(path)
    try:
        index.update()
    except BaseException:
        index.close()
        raise
    return index
