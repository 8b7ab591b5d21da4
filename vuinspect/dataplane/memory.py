"""Guest memory, read-only: the region table, its mappings and address translation.

The proxy sees every guest-memory fd it forwards; a ``GuestMemory`` keeps its
own ``dup`` of each (the one CPython's ``mmap`` makes: one fd per region), maps it ``PROT_READ``/``MAP_SHARED`` and translates
addresses exactly as the back-end would (VIRTQUEUE.md §1): ring addresses are
front-end virtual addresses (``userspace_addr``) unless ``GPA_ADDRESSES`` is
negotiated (guest-physical), or IOVAs through the IOTLB when
``ACCESS_PLATFORM`` is negotiated; buffer addresses inside the rings are
guest-physical, or IOVAs with an IOMMU.

Every read is bounds-checked against one region's mapping and against the
file's current size (a peer that shrinks its memfd must not SIGBUS us).  A
failure raises ``GuestMemoryError`` carrying a data-plane problem code; it is
the only exception this module raises on peer input.  Nothing is ever written.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..protocol import features as F
from .problems import DataProblem, dp_problem

Space = Literal["uva", "gpa", "iova"]

MAX_REGIONS = 512  # CONFIGURE_MEM_SLOTS back-ends announce far fewer (QEMU: 509 max)
MAX_IOTLB = 4096  # entries kept; the oldest is dropped beyond (DPDK keeps 2048)
MAX_READ = 1 << 20  # one read never allocates more than this
_GPA_BIT = F.PROTOCOL_BY_NAME["GPA_ADDRESSES"].bit
_U64 = (1 << 64) - 1


class GuestMemoryError(Exception):
    """An address or read the back-end could not make; ``code`` is a data-plane code."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @property
    def problem(self) -> DataProblem:
        return dp_problem(self.code, self.text)


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """One region as SET_MEM_TABLE / ADD_MEM_REG describe it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> RegionSpec:
        """From a decoded region (``Message.payload`` or a ``state.Region``)."""

        def get(key: str) -> int:
            return int(p[key] if isinstance(p, Mapping) else getattr(p, key))

        return cls(
            get("guest_phys_addr"), get("memory_size"), get("userspace_addr"), get("mmap_offset")
        )

    def base(self, space: Space) -> int:
        return self.guest_phys_addr if space == "gpa" else self.userspace_addr

    def matches(self, other: RegionSpec) -> bool:
        """REM_MEM_REG identity: the same gpa, size and uva (mmap_offset may differ)."""
        return (self.guest_phys_addr, self.memory_size, self.userspace_addr) == (
            other.guest_phys_addr,
            other.memory_size,
            other.userspace_addr,
        )


@dataclass(slots=True)
class MappedRegion:
    """A region with our own fd and read-only mapping (or why it has none)."""

    spec: RegionSpec
    map: mmap.mmap | None = None  # holds its own dup of the fd (CPython's mmap dups it)
    delta: int = 0  # mmap_offset minus the page-aligned offset that was mapped
    error: str = ""

    def close(self) -> None:
        """Unmap and close our dup of the fd."""
        if self.map is not None:
            self.map.close()
            self.map = None

    def read(self, off: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``off`` into the region (``what`` names it in the error):
        inside the mapping and the file's current size (a shrunk file would SIGBUS)."""
        if self.map is None or off < 0 or size < 0 or off + size > self.spec.memory_size:
            raise GuestMemoryError(
                "guest_read_crosses_region",
                f"{what}+{size:#x} is outside the region ({self.spec.memory_size:#x} bytes)",
            )
        try:
            file_size = self.map.size()  # fstat of the mapping's own fd
        except OSError as e:  # pragma: no cover - our own dup cannot go away
            raise GuestMemoryError("region_map_failed", str(e)) from None
        start = self.spec.mmap_offset - self.delta
        off += self.delta
        if start + off + size > file_size:  # the peer shrank the file: reading would SIGBUS
            raise GuestMemoryError(
                "guest_read_crosses_region",
                f"{what}+{size:#x} is beyond the region file's end ({file_size:#x} bytes)",
            )
        return self.map[off : off + size]


@dataclass(frozen=True, slots=True)
class IotlbEntry:
    iova: int
    size: int
    uaddr: int
    perm: int  # 1 RO, 2 WO, 3 RW (layouts.IOTLB_PERM)


def _map(spec: RegionSpec, fd: int) -> MappedRegion:
    """Map the region read-only (the mapping keeps its own dup of ``fd``).

    A failure is kept as ``error`` and holds nothing.
    """
    region = MappedRegion(spec)
    if spec.memory_size <= 0 or spec.mmap_offset < 0:
        region.error = f"memory_size {spec.memory_size:#x}, mmap_offset {spec.mmap_offset:#x}"
        return region
    try:
        st = os.fstat(fd)
        # hugetlbfs needs huge-page-aligned offsets; its st_blksize is the huge page size
        align = mmap.ALLOCATIONGRANULARITY
        if st.st_blksize > align and st.st_blksize & (st.st_blksize - 1) == 0:
            align = min(st.st_blksize, 1 << 30)
        start = spec.mmap_offset - spec.mmap_offset % align
        region.delta = spec.mmap_offset - start
        region.map = mmap.mmap(
            fd, spec.memory_size + region.delta, mmap.MAP_SHARED, mmap.PROT_READ, offset=start
        )
    except (OSError, ValueError, OverflowError) as e:
        region.close()
        region.error = str(e) or type(e).__name__
    return region


class GuestMemory:
    """The memory table of one connection, mapped read-only, with its IOTLB.

    Follows SET_MEM_TABLE (``set_table``), ADD/REM_MEM_REG (``add_region``,
    ``remove_region``), IOTLB UPDATE/INVALIDATE (``iotlb_update``,
    ``iotlb_invalidate``, or ``iotlb_message`` for a decoded payload),
    RESET_OWNER/RESET_DEVICE (``reset``) and the end of the connection
    (``close``).  Usable as a context manager.
    """

    def __init__(self, *, gpa_addresses: bool = False, iommu: bool = False) -> None:
        self.gpa_addresses = gpa_addresses
        self.iommu = iommu
        self._regions: list[MappedRegion] = []
        self._iotlb: dict[int, IotlbEntry] = {}  # iova -> entry, insertion order = age
        self._iotlb_keys: list[int] = []  # sorted iovas
        self.closed = False

    # --- negotiated features ---------------------------------------------------
    def set_features(self, virtio: int | None = None, protocol: int | None = None) -> None:
        """Pick the address spaces from the acked virtio / protocol feature words."""
        if virtio is not None:
            self.iommu = bool(virtio >> F.ACCESS_PLATFORM_BIT & 1)
        if protocol is not None:
            self.gpa_addresses = bool(protocol >> _GPA_BIT & 1)

    @property
    def ring_space(self) -> Space:
        """How SET_VRING_ADDR addresses are read."""
        return "iova" if self.iommu else "gpa" if self.gpa_addresses else "uva"

    @property
    def buffer_space(self) -> Space:
        """How descriptor addresses inside the rings are read."""
        return "iova" if self.iommu else "gpa"

    # --- the region table -----------------------------------------------------
    @property
    def regions(self) -> tuple[RegionSpec, ...]:
        return tuple(r.spec for r in self._regions)

    @property
    def mapped(self) -> int:
        """How many regions hold a mapping now."""
        return sum(r.map is not None for r in self._regions)

    def set_table(self, specs: Sequence[RegionSpec], fds: Sequence[int]) -> list[DataProblem]:
        """SET_MEM_TABLE: replace every region; region i uses ``fds[i]``."""
        self._unmap_all()
        problems = []
        for i, spec in enumerate(specs):
            problems += self.add_region(spec, fds[i] if i < len(fds) else -1)
        return problems

    def add_region(self, spec: RegionSpec, fd: int) -> list[DataProblem]:
        """ADD_MEM_REG: map one more region (our own dup of ``fd``)."""
        self._check_open()
        if len(self._regions) >= MAX_REGIONS:
            return [dp_problem("region_map_failed", f"more than {MAX_REGIONS} regions")]
        region = _map(spec, fd) if fd >= 0 else MappedRegion(spec, error="no fd")
        self._regions.append(region)
        if region.error:
            return [
                dp_problem(
                    "region_map_failed",
                    f"region gpa {spec.guest_phys_addr:#x} "
                    f"size {spec.memory_size:#x}: {region.error}",
                )
            ]
        return []

    def remove_region(self, spec: RegionSpec) -> bool:
        """REM_MEM_REG: unmap the region with the same gpa, size and uva."""
        for i, region in enumerate(self._regions):
            if region.spec.matches(spec):
                region.close()
                del self._regions[i]
                return True
        return False

    # --- IOTLB ------------------------------------------------------------------
    def iotlb_update(self, iova: int, size: int, uaddr: int, perm: int = 3) -> None:
        if size <= 0 or iova + size - 1 > _U64:
            return
        self.iotlb_invalidate(iova, size)
        if len(self._iotlb) >= MAX_IOTLB:
            oldest = next(iter(self._iotlb))
            del self._iotlb[oldest]
            self._iotlb_keys.remove(oldest)
        self._iotlb[iova] = IotlbEntry(iova, size, uaddr, perm)
        bisect.insort(self._iotlb_keys, iova)

    def iotlb_invalidate(self, iova: int, size: int) -> None:
        """Drop every entry overlapping [iova, iova + size)."""
        end = iova + max(size, 1)
        i = bisect.bisect_left(self._iotlb_keys, iova)
        if (
            i
            and self._iotlb[self._iotlb_keys[i - 1]].iova
            + self._iotlb[self._iotlb_keys[i - 1]].size
            > iova
        ):
            i -= 1
        j = i
        while j < len(self._iotlb_keys) and self._iotlb_keys[j] < end:
            del self._iotlb[self._iotlb_keys[j]]
            j += 1
        del self._iotlb_keys[i:j]

    def iotlb_message(self, p: Mapping[str, Any]) -> None:
        """Apply a decoded IOTLB_MSG payload (type 2 UPDATE, 3 INVALIDATE)."""
        kind = p.get("type")
        if kind == 2:
            self.iotlb_update(
                p.get("iova", 0), p.get("size", 0), p.get("uaddr", 0), p.get("perm", 0)
            )
        elif kind == 3:
            self.iotlb_invalidate(p.get("iova", 0), p.get("size", 0))

    @property
    def iotlb(self) -> tuple[IotlbEntry, ...]:
        return tuple(self._iotlb[k] for k in self._iotlb_keys)

    # --- lifecycle --------------------------------------------------------------
    def reset(self) -> None:
        """RESET_OWNER / RESET_DEVICE: forget every region and IOTLB entry."""
        self._unmap_all()
        self._iotlb.clear()
        self._iotlb_keys.clear()

    def close(self) -> None:
        """End of the connection: nothing stays mapped or referenced."""
        self.reset()
        self.closed = True

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unmap_all(self) -> None:
        for region in self._regions:
            region.close()
        self._regions.clear()

    def _check_open(self) -> None:
        if self.closed:
            raise GuestMemoryError("guest_addr_unmapped", "guest memory is closed")

    # --- translation and reads ----------------------------------------------------
    def _iova_to_uva(self, addr: int, size: int) -> int:
        i = bisect.bisect_right(self._iotlb_keys, addr) - 1
        entry = self._iotlb[self._iotlb_keys[i]] if i >= 0 else None
        if entry is None or addr >= entry.iova + entry.size:
            raise GuestMemoryError("iotlb_miss", f"IOVA {addr:#x}: no IOTLB entry")
        if addr + size > entry.iova + entry.size:
            raise GuestMemoryError(
                "iotlb_miss",
                f"IOVA {addr:#x}+{size:#x} runs past the IOTLB "
                f"entry {entry.iova:#x}+{entry.size:#x}",
            )
        return entry.uaddr + (addr - entry.iova)

    def translate(self, addr: int, size: int, space: Space) -> tuple[MappedRegion, int]:
        """The region holding [addr, addr + size) and the offset of addr in its mapping."""
        self._check_open()
        if size < 0 or size > 1 << 32 or addr < 0 or addr + size - 1 > _U64:
            raise GuestMemoryError("guest_addr_unmapped", f"{addr:#x}+{size:#x}: bad area")
        if space == "iova":
            addr, space = self._iova_to_uva(addr, size), "uva"
        for region in self._regions:
            base = region.spec.base(space)
            if base <= addr < base + region.spec.memory_size:
                off = addr - base
                if off + size > region.spec.memory_size:
                    raise GuestMemoryError(
                        "guest_read_crosses_region",
                        f"{space} {addr:#x}+{size:#x} runs past the "
                        f"end of region {base:#x}+{region.spec.memory_size:#x}",
                    )
                if region.map is None:
                    raise GuestMemoryError(
                        "region_map_failed",
                        f"{space} {addr:#x} is in region {base:#x} that "
                        f"could not be mapped: {region.error}",
                    )
                return region, off + region.delta
        raise GuestMemoryError("guest_addr_unmapped", f"{space} {addr:#x}: in no memory region")

    def read(self, addr: int, size: int, space: Space) -> bytes:
        """``size`` bytes at ``addr`` in ``space``, all inside one mapped region."""
        if not 0 <= size <= MAX_READ:
            raise GuestMemoryError("guest_addr_unmapped", f"read of {size:#x} bytes refused")
        region, off = self.translate(addr, size, space)
        return region.read(off - region.delta, size, f"{space} {addr:#x}")

    def read_ring(self, addr: int, size: int) -> bytes:
        return self.read(addr, size, self.ring_space)

    def read_buffer(self, addr: int, size: int) -> bytes:
        return self.read(addr, size, self.buffer_space)


def regions_from(payloads: Iterable[Mapping[str, Any]]) -> list[RegionSpec]:
    """RegionSpecs from a decoded SET_MEM_TABLE ``regions`` list."""
    return [RegionSpec.from_payload(p) for p in payloads]
