"""The INFLIGHT_SHMFD region: what the back-end recorded as in flight, per queue.

With protocol feature ``INFLIGHT_SHMFD`` the back-end hands the front-end a
shared buffer (``GET_INFLIGHT_FD``) that the front-end gives back to every
back-end instance (``SET_INFLIGHT_FD``): the back-end marks each descriptor it
takes and unmarks it when it is used, so a restarted back-end can resubmit what
its predecessor never finished.  Reading it shows which requests a back-end
holds, beside what the rings say (PROTOCOL.md §4.11):

* one region per queue, ``mmap_size / num_queues`` bytes each (libvhost-user
  and DPDK round ``queue_size`` descriptor states plus the header up to 64 bytes);
* split: a 16-byte header {u64 features, u16 version, u16 desc_num,
  u16 last_batch_head, u16 used_idx} then ``desc_num`` × 16-byte states
  {u8 inflight, 5 pad, u16 next, u64 counter};
* packed: a 32-byte header {u64 features, u16 version, u16 desc_num,
  u16 free_head, u16 old_free_head, u16 used_idx, u16 old_used_idx,
  u8 used_wrap_counter, u8 old_used_wrap_counter, 7 pad} then ``desc_num`` ×
  32-byte states {u8 inflight, u8 pad, u16 next, u16 last, u16 num, u64 counter,
  u16 id, u16 flags, u32 len, u64 addr}.

All fields are in the host's byte order (the buffer is shared by two processes
of one host).  The fd is mapped read-only (our own dup, through
``memory._map``); every read is bounds-checked against the mapping and the
file's current size; sizes from the peer never make a read larger than one
queue region, nor a listing longer than ``max_descs``.
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field
from typing import Any

from .memory import GuestMemoryError, MappedRegion, RegionSpec, _map
from .problems import DataProblem, dp_problem

SPLIT_HEADER = struct.Struct("=QHHHH")  # features version desc_num last_batch_head used_idx
SPLIT_DESC = struct.Struct("=B5xHQ")  # inflight next counter
PACKED_HEADER = struct.Struct("=QHHHHHHBB7x")
PACKED_DESC = struct.Struct("=BxHHHQHHIQ")  # inflight next last num counter id flags len addr
#: A region larger than this is not mapped (65535 queues of 32768 packed states is 64 GiB:
#: no back-end asks that much; QEMU's blk with 16 queues of 256 is 68 KiB).
MAX_MMAP = 1 << 30
#: Descriptor states listed per queue (all are counted).
MAX_LISTED = 64


@dataclass(frozen=True, slots=True)
class InflightQueue:
    """One queue's region: its header and the descriptors marked in flight."""

    index: int
    layout: str  # split | packed
    version: int
    desc_num: int
    used_idx: int
    header: dict[str, int]  # the rest of the header, by name
    count: int  # descriptors marked in flight
    descs: tuple[dict[str, int], ...]  # the first MAX_LISTED of them, in counter order
    problems: tuple[DataProblem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queue": self.index,
            "layout": self.layout,
            "version": self.version,
            "desc_num": self.desc_num,
            "used_idx": self.used_idx,
            **self.header,
            "count": self.count,
            "descs": list(self.descs),
        }
        if self.problems:
            out["problems"] = [p.to_json() for p in self.problems]
        return out


@dataclass(slots=True)
class InflightRegion:
    """The mapped INFLIGHT_SHMFD buffer of one connection (from SET_INFLIGHT_FD)."""

    mmap_size: int
    num_queues: int
    queue_size: int
    region: MappedRegion | None = None
    problems: list[DataProblem] = field(default_factory=list)

    @classmethod
    def open(
        cls, fd: int, mmap_size: int, mmap_offset: int, num_queues: int, queue_size: int
    ) -> InflightRegion:
        """Map ``fd`` read-only as SET_INFLIGHT_FD describes it (``problems`` says why not);
        the caller keeps and closes ``fd`` (the mapping holds its own dup)."""
        self = cls(mmap_size, num_queues, queue_size)
        if not 0 < mmap_size <= MAX_MMAP or mmap_offset < 0 or num_queues <= 0:
            self.problems.append(
                dp_problem(
                    "inflight_bad_region",
                    f"inflight region of {mmap_size:#x} bytes at {mmap_offset:#x} for "
                    f"{num_queues} queues is not mapped",
                )
            )
            return self
        region = _map(RegionSpec(0, mmap_size, 0, mmap_offset), fd)
        if region.map is None:
            self.problems.append(
                dp_problem("region_map_failed", f"inflight fd not mapped: {region.error}")
            )
            return self
        self.region = region
        return self

    @property
    def mapped(self) -> bool:
        return self.region is not None

    @property
    def stride(self) -> int:
        return self.mmap_size // self.num_queues if self.num_queues else 0

    def close(self) -> None:
        if self.region is not None:
            self.region.close()
            self.region = None

    def queue(self, index: int, packed: bool = False, max_descs: int = MAX_LISTED) -> InflightQueue:
        """Queue ``index``'s region read now (a problem, never an exception, on bad data)."""
        layout = "packed" if packed else "split"
        hdr, desc = (PACKED_HEADER, PACKED_DESC) if packed else (SPLIT_HEADER, SPLIT_DESC)

        def bad(text: str, code: str = "inflight_bad_region") -> InflightQueue:
            return InflightQueue(index, layout, 0, 0, 0, {}, 0, (), (dp_problem(code, text),))

        if self.region is None:
            return bad(f"queue {index}: the inflight region is not mapped")
        if not 0 <= index < self.num_queues:
            return bad(f"queue {index}: the inflight region holds {self.num_queues} queues")
        base = index * self.stride
        try:
            head = hdr.unpack(self.region.read(base, hdr.size, f"inflight queue {index}"))
            _, version, desc_num, *rest = head
            room = (self.stride - hdr.size) // desc.size
            if desc_num > min(room, self.queue_size or room):
                return bad(
                    f"queue {index}: desc_num {desc_num} does not fit its "
                    f"{self.stride}-byte region (queue_size {self.queue_size})"
                )
            states = self.region.read(
                base + hdr.size, desc_num * desc.size, f"inflight queue {index}"
            )
        except GuestMemoryError as e:
            return bad(e.text, e.code)
        marked = [i for i, b in enumerate(states[:: desc.size]) if b]  # (one C-level slice)
        at = 4 if packed else 2  # the counter's place in a state
        listed = heapq.nsmallest(  # the oldest by counter: the order a restart resubmits in
            max(max_descs, 0),
            ((desc.unpack_from(states, i * desc.size), i) for i in marked),
            key=lambda vi: (vi[0][at], vi[1]),
        )
        if packed:
            names = ("free_head", "old_free_head", "old_used_idx", "used_wrap_counter")
            free_head, old_free_head, used_idx, old_used_idx, wrap, old_wrap = rest
            header = dict(zip(names, (free_head, old_free_head, old_used_idx, wrap), strict=True))
            header["old_used_wrap_counter"] = old_wrap
            descs = tuple(
                {
                    "index": i,
                    "counter": v[4],
                    "next": v[1],
                    "last": v[2],
                    "num": v[3],
                    "id": v[5],
                    "flags": v[6],
                    "len": v[7],
                    "addr": v[8],
                }
                for v, i in listed
            )
        else:
            last_batch_head, used_idx = rest
            header = {"last_batch_head": last_batch_head}
            descs = tuple({"index": i, "counter": v[2], "next": v[1]} for v, i in listed)
        return InflightQueue(index, layout, version, desc_num, used_idx, header, len(marked), descs)
