"""Data-plane problem codes, as data, in the shape of ``protocol.problems``.

Kept here until the integration merges ``DATAPLANE_CODES`` into
``vuinspect/protocol/problems.py`` (same ``ProblemCode`` record: code, Wireshark
expert group, severity, summary).  A ``DataProblem`` is a finding on a vring or
an address: data attached to a result, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.problems import ProblemCode

_ALL = (
    # guest memory and address translation
    ProblemCode("guest_addr_unmapped", "protocol", "error",
                "address in no memory region (the back-end cannot reach it)"),
    ProblemCode("guest_read_crosses_region", "malformed", "error",
                "an area starts inside a memory region but ends outside it"),
    ProblemCode("iotlb_miss", "protocol", "warning",
                "IOVA with no IOTLB entry (the back-end would send an IOTLB MISS)"),
    ProblemCode("region_map_failed", "protocol", "error",
                "a memory region's fd could not be mapped (bad fd, size or mmap_offset)"),
    # ring contents
    ProblemCode("ring_bad_size", "protocol", "error",
                "queue size 0, above 32768, or (split ring) not a power of 2"),
    ProblemCode("ring_backwards", "malformed", "error", "a ring index moved backwards"),
    ProblemCode("ring_index_ahead", "malformed", "error",
                "the available index is more than num slots ahead of the used index"),
    ProblemCode("ring_bad_head", "malformed", "error",
                "an available or used ring entry names a descriptor outside 0..num-1"),
    ProblemCode("desc_loop", "malformed", "error", "a descriptor chain revisits a descriptor"),
    ProblemCode("desc_chain_too_long", "malformed", "error",
                "a descriptor chain is longer than the queue size"),
    ProblemCode("desc_bad_next", "malformed", "error",
                "a descriptor's next index is outside the table"),
    ProblemCode("desc_bad_indirect", "malformed", "error",
                "an indirect descriptor that the spec forbids (size, nesting or NEXT)"),
    ProblemCode("used_id_not_available", "malformed", "error",
                "the device returned a buffer id that was not available"),
    # diagnosis over time
    ProblemCode("backend_stalled", "sequence", "error",
                "requests in flight and the used index did not move"),
    ProblemCode("lost_kick", "sequence", "warning",
                "the driver made buffers available without suppression, no kick came, no progress"),
    ProblemCode("lost_call", "sequence", "warning",
                "the device used buffers the driver asked to be told about, no call came"),
    ProblemCode("ring_reset_in_flight", "sequence", "warning",
                "the ring was stopped or reset with requests still in flight"),
)

DATAPLANE_CODES: dict[str, ProblemCode] = {p.code: p for p in _ALL}


@dataclass(frozen=True, slots=True)
class DataProblem:
    """One data-plane finding: a stable ``code`` plus human ``text``."""

    code: str
    text: str

    @property
    def info(self) -> ProblemCode:
        return DATAPLANE_CODES[self.code]

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.info.severity, "text": self.text}


def problem_from_json(d: Any) -> DataProblem:
    """A DataProblem read back (from a capture); ValueError if it is not one we know."""
    if not isinstance(d, dict) or d.get("code") not in DATAPLANE_CODES \
            or not isinstance(d.get("text"), str):
        raise ValueError(f"not a data-plane problem: {d!r:.80}")
    return DataProblem(d["code"], d["text"])


def dp_problem(code: str, text: str | None = None) -> DataProblem:
    """Make a DataProblem; ``text`` defaults to the code's summary."""
    if code not in DATAPLANE_CODES:
        raise KeyError(f"unknown data-plane problem code {code!r}")
    return DataProblem(code, text or DATAPLANE_CODES[code].summary)
