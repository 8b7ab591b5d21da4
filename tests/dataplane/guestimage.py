"""Guest memory built by the tests: a memfd mapped writable here, read-only by the library."""

from __future__ import annotations

import gc
import mmap
import os
import struct

from vuinspect.dataplane import RegionSpec, RingConfig
from vuinspect.dataplane.rings import DESC_F_AVAIL, DESC_F_NEXT, DESC_F_USED

GPA = 0x4000_0000
UVA = 0x7F00_0000_0000


class GuestImage:
    """``size`` bytes of 'guest RAM' at GPA/UVA, stored at ``mmap_offset`` in a memfd."""

    def __init__(
        self,
        size: int = 1 << 20,
        mmap_offset: int = 0,
        name: str = "vuinspect-test",
        gpa: int = GPA,
        uva: int = UVA,
    ) -> None:
        self.size, self.mmap_offset, self.gpa, self.uva = size, mmap_offset, gpa, uva
        self.name = name
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size + mmap_offset)
        self.mm = mmap.mmap(self.fd, size + mmap_offset)

    @property
    def spec(self) -> RegionSpec:
        return RegionSpec(self.gpa, self.size, self.uva, self.mmap_offset)

    def off(self, gpa: int) -> int:
        return gpa - self.gpa + self.mmap_offset

    def uva_of(self, gpa: int) -> int:
        return gpa - self.gpa + self.uva

    def write(self, gpa: int, data: bytes) -> None:
        o = self.off(gpa)
        self.mm[o : o + len(data)] = data

    def pack(self, gpa: int, fmt: str, *values: int) -> None:
        self.write(gpa, struct.pack("<" + fmt, *values))

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


class SplitRing:
    """The driver and device sides of a split ring in a GuestImage (addresses are GPAs)."""

    def __init__(
        self, img: GuestImage, num: int, base: int = GPA + 0x1000, event_idx: bool = False
    ) -> None:
        self.img, self.num, self.event_idx = img, num, event_idx
        self.desc = base
        self.avail = base + 16 * num
        self.used = (self.avail + 6 + 2 * num + 3) & ~3
        self.avail_idx = self.used_idx = 0

    def config(self, space: str = "uva", index: int = 0) -> RingConfig:
        conv = self.img.uva_of if space == "uva" else (lambda a: a)
        return RingConfig(
            index,
            self.num,
            conv(self.desc),
            conv(self.avail),
            conv(self.used),
            False,
            self.event_idx,
        )

    def set_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        self.img.pack(self.desc + 16 * i, "QIHH", addr, length, flags, nxt)

    def set_avail_idx(self, idx: int) -> None:
        self.avail_idx = idx & 0xFFFF
        self.img.pack(self.avail + 2, "H", self.avail_idx)

    def set_used_idx(self, idx: int) -> None:
        self.used_idx = idx & 0xFFFF
        self.img.pack(self.used + 2, "H", self.used_idx)

    def add_avail(self, *heads: int) -> None:
        for h in heads:
            self.img.pack(self.avail + 4 + 2 * (self.avail_idx % self.num), "H", h)
            self.set_avail_idx(self.avail_idx + 1)

    def push_used(self, ident: int, length: int = 0) -> None:
        self.img.pack(self.used + 4 + 8 * (self.used_idx % self.num), "II", ident, length)
        self.set_used_idx(self.used_idx + 1)

    def set_flags(self, avail: int = 0, used: int = 0) -> None:
        self.img.pack(self.avail, "H", avail)
        self.img.pack(self.used, "H", used)

    def set_events(self, used_event: int, avail_event: int) -> None:
        self.img.pack(self.avail + 4 + 2 * self.num, "H", used_event)
        self.img.pack(self.used + 4 + 8 * self.num, "H", avail_event)


class PackedRing:
    """A packed ring: the driver makes chains available, the device marks them used."""

    def __init__(self, img: GuestImage, num: int, base: int = GPA + 0x1000) -> None:
        self.img, self.num = img, num
        self.desc = base
        self.driver_event = base + 16 * num
        self.device_event = self.driver_event + 4
        self.avail_pos, self.avail_wrap = 0, 1
        self.used_pos, self.used_wrap = 0, 1

    def config(self, index: int = 0) -> RingConfig:
        conv = self.img.uva_of
        return RingConfig(
            index,
            self.num,
            conv(self.desc),
            conv(self.driver_event),
            conv(self.device_event),
            True,
            False,
        )

    def write_desc(self, pos: int, addr: int, length: int, ident: int, flags: int) -> None:
        self.img.pack(self.desc + 16 * pos, "QIHH", addr, length, ident, flags)

    def make_available(self, ident: int, bufs: list[tuple[int, int, int]]) -> int:
        """Chain of (addr, len, flags) with id ``ident``; returns its first position."""
        first = self.avail_pos
        for k, (addr, length, flags) in enumerate(bufs):
            more = DESC_F_NEXT if k < len(bufs) - 1 else 0
            wrapbits = (DESC_F_AVAIL if self.avail_wrap else 0) | (
                0 if self.avail_wrap else DESC_F_USED
            )
            self.write_desc(self.avail_pos, addr, length, ident, flags | more | wrapbits)
            self.avail_pos += 1
            if self.avail_pos == self.num:
                self.avail_pos, self.avail_wrap = 0, self.avail_wrap ^ 1
        return first

    def mark_used(self, ident: int, slots: int, length: int = 0) -> None:
        bits = (DESC_F_AVAIL | DESC_F_USED) if self.used_wrap else 0
        self.write_desc(self.used_pos, 0, length, ident, bits)
        self.used_pos += slots
        if self.used_pos >= self.num:
            self.used_pos, self.used_wrap = self.used_pos - self.num, self.used_wrap ^ 1

    def set_events(self, driver: tuple[int, int, int], device: tuple[int, int, int]) -> None:
        """(offset, wrap, flags) of the driver and device event suppression areas."""
        for addr, (off, wrap, flags) in ((self.driver_event, driver), (self.device_event, device)):
            self.img.pack(addr, "HH", off | wrap << 15, flags)


def fd_count() -> int:
    """Open fds of this process, after a collection: objects an earlier test left to the
    garbage collector (a capture file, a socket) must not close theirs in the middle."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def maps_mentioning(name: str, perms: str = "r--s") -> list[str]:
    """Mappings of ``name`` with ``perms`` (the library's are r--s; the tests' own rw-s)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if name in line and line.split()[1] == perms]
