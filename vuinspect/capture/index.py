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

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.capture.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    EXPORTED_PDU_PREFIX,
    MAX_BLOCK_LEN,
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

_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_HDR_LE = struct.Struct("<II")


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
        self.sections: list[Section] = []
        self._section_starts: list[int] = []
        self.interfaces: list[Interface] = []
        self.error: CaptureError | None = None
        self.skipped = 0
        self._mm: mmap.mmap | None = None
        self._size = 0
        self._end = 0  # offset just after the last whole block scanned
        self._section: Section | None = None
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
            if self._end == 0:
                why = sniff(self._mm[:12])
                if why is None and size >= 12 and shb_order(self._mm, 0) is None:
                    why = "pcapng section header with a bad byte-order magic"
                if why is not None:
                    raise CaptureFormatError(why, 0)
            try:
                self._scan(None if max_bytes is None else self._end + max_bytes)
            except CaptureError as exc:
                if isinstance(exc, CaptureFormatError) and not self.offsets:
                    raise
                if exc.offset is None:  # a bad later section header: damage at that block
                    exc = CaptureError(exc.reason, self._end)
                self.error = exc
            return len(self.offsets) - before

    def _scan(self, limit: int | None) -> None:  # noqa: C901 - one hot loop, kept flat for speed
        mm = self._mm
        assert mm is not None
        end = self._size
        pos = self._end
        section = self._section
        hdr = _HDR_LE.unpack_from  # until a section header says otherwise
        if section is not None:
            hdr, u32, ifaces = section.hdr.unpack_from, section.u32.unpack_from, section.interfaces
            epb = section.epb.unpack_from
        offsets = self.offsets
        add = offsets.append
        # The exported-PDU tags plus our magic and version: one compare per packet.
        prefix = EXPORTED_PDU_PREFIX + pseudohdr.MAGIC + bytes([pseudohdr.VERSION])
        prefix_len = len(prefix)
        try:
            stop = end if limit is None else min(limit, end)
            while pos < stop and pos + 8 <= end:
                btype, blen = hdr(mm, pos)
                if btype == BT_SHB:  # the same in both byte orders: read the order, then the length
                    if pos + 12 > end:
                        break
                    order = shb_order(mm, pos)
                    if order is None:
                        raise CaptureError(f"section header at offset {pos} has a bad byte-order magic", pos)
                    section = Section(len(self.sections), pos, order)
                    hdr, u32, ifaces = section.hdr.unpack_from, section.u32.unpack_from, section.interfaces
                    epb = section.epb.unpack_from
                    blen = hdr(mm, pos)[1]
                elif section is None:
                    raise CaptureError(f"block at offset {pos} precedes any section header", pos)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK_LEN:
                    raise CaptureError(f"block at offset {pos} has an invalid length {blen}", pos)
                if pos + blen > end:
                    break
                if u32(mm, pos + blen - 4)[0] != blen:
                    raise CaptureError(
                        f"block at offset {pos}: trailing length {u32(mm, pos + blen - 4)[0]} "
                        f"does not match {blen}",
                        pos,
                    )
                if btype == BT_EPB:
                    if blen < 32:  # as the reader says it; unpacking would read past the block
                        raise CaptureError(f"packet block at offset {pos} too short ({blen} bytes)", pos)
                    iface_id, _, _, caplen = epb(mm, pos + 8)
                    if (
                        prefix_len <= caplen <= blen - 32
                        and iface_id < len(ifaces)
                        and ifaces[iface_id].ours
                        and mm[pos + 28 : pos + 28 + prefix_len] == prefix
                    ):
                        add(pos)
                    else:
                        self._odd_packet(mm, pos, blen, section, bool(offsets))
                elif btype == BT_SHB:
                    parse_shb(mm, pos, blen, section)
                    self.sections.append(section)
                    self._section_starts.append(pos)
                elif btype == BT_IDB:
                    self.interfaces.append(parse_idb(mm, pos, blen, section))
                pos += blen
            if pos < stop:
                have = end - pos
                if have >= 8 and mm[pos : pos + 4] != _SHB_MAGIC:
                    blen = hdr(mm, pos)[1]
                    raise CaptureError(
                        f"block at offset {pos} cut short: header says {blen} bytes, {have} present", pos
                    )
                raise CaptureError(f"block at offset {pos} cut short: {have} bytes present", pos)
            if pos >= end and not offsets and not any(i.ours for i in self.interfaces):
                foreign = [i for i in self.interfaces if not i.ours]
                if foreign:
                    raise CaptureFormatError(linktype_refusal(foreign[0]), None)
        except CaptureError:
            raise
        except (ArithmeticError, LookupError, ValueError, struct.error) as exc:
            raise CaptureError(f"block at offset {pos} is corrupt: {exc}", pos) from None
        finally:
            self._end = pos
            self._section = section

    def _odd_packet(self, mm: mmap.mmap, pos: int, blen: int, section: Section, have_frames: bool) -> None:
        """An EPB off the fast path: ours after all (other tag layout), foreign, or damaged."""
        got = epb_frame(mm, pos, blen, section)  # raises CaptureError if ours but damaged
        if isinstance(got, str):
            if not have_frames:
                raise CaptureFormatError(got, pos)
            self.skipped += 1
        else:
            self.offsets.append(pos)

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
            section = self.sections[bisect_right(self._section_starts, off) - 1]
            blen = section.u32.unpack_from(mm, off + 4)[0]
            got = epb_frame(mm, off, blen, section)
        if isinstance(got, str):  # cannot happen for an indexed offset
            raise CaptureError(f"frame {i} at offset {off}: {got}", off)
        return got

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

