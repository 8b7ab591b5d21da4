"""Problem codes: the stable names of everything that can be wrong with a message.

A problem is data attached to a message, never an exception: an inspector
keeps decoding and forwarding.  Each code maps to a Wireshark expert-info
group and a severity (error, warning, note) so that the generated Lua dissector
reports the same code as ``vhost_user.expert.<code>`` at the same level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Group = Literal["malformed", "sequence", "protocol", "response_code", "undecoded"]
Severity = Literal["error", "warning", "note"]

#: Severities, worst first (Wireshark's expert levels ERROR, WARN, NOTE).  A note
#: is worth knowing but harmless in practice (e.g. QEMU 7.2's uninitialised IOTLB
#: padding); the bare ``problems`` filter and the TUI marker mean warning and above.
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")
RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}  # lower is worse


@dataclass(frozen=True, slots=True)
class ProblemCode:
    code: str
    group: Group
    severity: Severity
    summary: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding on one message: a stable ``code`` plus human ``text``."""

    code: str
    text: str

    @property
    def info(self) -> ProblemCode:
        return CODES[self.code]

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.info.severity, "text": self.text}


_ALL = (
    # framing and header (malformed)
    ProblemCode("truncated_header", "malformed", "error", "stream ended inside a 12-byte header"),
    ProblemCode(
        "truncated_payload",
        "malformed",
        "error",
        "stream ended before the payload the header announced",
    ),
    ProblemCode(
        "oversize",
        "malformed",
        "error",
        "payload size above the protocol maximum: framing cannot be trusted",
    ),
    ProblemCode(
        "framing_lost",
        "malformed",
        "error",
        "bytes that do not form a vhost-user message (passed through raw)",
    ),
    ProblemCode("bad_version", "malformed", "error", "version bits in flags are not 1"),
    ProblemCode("reserved_flags", "malformed", "warning", "reserved flag bits 4-31 are set"),
    ProblemCode(
        "wrong_size", "malformed", "error", "payload size does not match the layout of this message"
    ),
    ProblemCode(
        "bad_count",
        "malformed",
        "error",
        "a count field is out of range or disagrees with the size",
    ),
    ProblemCode("nonzero_padding", "malformed", "note", "padding bytes are not zero"),
    ProblemCode(
        "wrong_direction",
        "malformed",
        "error",
        "a request sent by the side that may only reply on this channel",
    ),
    # fds (malformed)
    ProblemCode(
        "fd_count", "malformed", "error", "number of fds does not match what the message carries"
    ),
    ProblemCode(
        "fds_truncated",
        "malformed",
        "error",
        "the kernel truncated the fds of this message (MSG_CTRUNC)",
    ),
    # unknown things (undecoded)
    ProblemCode("unknown_request", "undecoded", "warning", "request id not in the specification"),
    # request/reply pairing (sequence)
    ProblemCode(
        "reply_flags",
        "sequence",
        "error",
        "reply flags are not exactly 0x5 (QEMU drops the connection)",
    ),
    ProblemCode("reply_to_nothing", "sequence", "error", "a reply with no request waiting for it"),
    ProblemCode(
        "reply_mismatch", "sequence", "error", "reply id differs from the request that waits"
    ),
    ProblemCode(
        "missing_reply",
        "sequence",
        "error",
        "a request that needed a reply got none before the next request or the end",
    ),
    ProblemCode(
        "unexpected_reply", "sequence", "warning", "a reply to a request that did not ask for one"
    ),
    ProblemCode(
        "request_while_waiting",
        "sequence",
        "warning",
        "a new request was sent while an earlier one still waits for its reply",
    ),
    # negotiated state (protocol)
    ProblemCode(
        "feature_not_negotiated",
        "protocol",
        "warning",
        "message needs a feature that was not negotiated",
    ),
    ProblemCode(
        "features_not_offered", "protocol", "error", "features set that the back-end did not offer"
    ),
    ProblemCode(
        "need_reply_without_ack",
        "protocol",
        "note",
        "NEED_REPLY set but REPLY_ACK not negotiated: no ack will come",
    ),
    ProblemCode(
        "enable_without_protocol_features",
        "protocol",
        "warning",
        "SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated",
    ),
    ProblemCode(
        "vring_not_started",
        "protocol",
        "warning",
        "GET_VRING_BASE for a ring that was never started",
    ),
    ProblemCode(
        "vring_out_of_range",
        "protocol",
        "warning",
        "vring index above the queue count the back-end announced",
    ),
    ProblemCode(
        "too_many_regions", "protocol", "error", "more memory regions than the protocol allows"
    ),
    ProblemCode(
        "fds_without_backend_send_fd",
        "protocol",
        "error",
        "fds on the back-end channel without BACKEND_SEND_FD",
    ),
    # results (response code)
    ProblemCode("ack_error", "response_code", "warning", "the reply reports a failure"),
)

#: The data plane (issue 13): guest memory, ring contents, and diagnoses over time
#: (vuinspect/dataplane/); a ``ring`` message carries them.
_DATAPLANE = (
    # guest memory and address translation
    ProblemCode(
        "guest_addr_unmapped",
        "protocol",
        "error",
        "address in no memory region (the back-end cannot reach it)",
    ),
    ProblemCode(
        "guest_read_crosses_region",
        "malformed",
        "error",
        "an area starts inside a memory region but ends outside it",
    ),
    ProblemCode(
        "iotlb_miss",
        "protocol",
        "warning",
        "IOVA with no IOTLB entry (the back-end would send an IOTLB MISS)",
    ),
    ProblemCode(
        "ring_bad_sample",
        "malformed",
        "error",
        "a ring or notify frame of the capture that cannot be read",
    ),
    ProblemCode(
        "region_map_failed",
        "protocol",
        "error",
        "a memory region's fd could not be mapped (bad fd, size or mmap_offset)",
    ),
    ProblemCode(
        "inflight_bad_region",
        "protocol",
        "error",
        "the INFLIGHT_SHMFD region cannot hold its queues (size, queue count or desc_num)",
    ),
    # ring contents
    ProblemCode(
        "ring_bad_size",
        "protocol",
        "error",
        "queue size 0, above 32768, or (split ring) not a power of 2",
    ),
    ProblemCode("ring_backwards", "malformed", "error", "a ring index moved backwards"),
    ProblemCode(
        "ring_index_ahead",
        "malformed",
        "error",
        "the available index is more than num slots ahead of the used index",
    ),
    ProblemCode(
        "ring_bad_head",
        "malformed",
        "error",
        "an available or used ring entry names a descriptor outside 0..num-1",
    ),
    ProblemCode("desc_loop", "malformed", "error", "a descriptor chain revisits a descriptor"),
    ProblemCode(
        "desc_chain_too_long",
        "malformed",
        "error",
        "a descriptor chain is longer than the queue size",
    ),
    ProblemCode(
        "desc_bad_next", "malformed", "error", "a descriptor's next index is outside the table"
    ),
    ProblemCode(
        "desc_bad_indirect",
        "malformed",
        "error",
        "an indirect descriptor that the spec forbids (size, nesting or NEXT)",
    ),
    ProblemCode(
        "used_id_not_available",
        "malformed",
        "error",
        "the device returned a buffer id that was not available",
    ),
    # diagnosis over time
    ProblemCode(
        "backend_stalled", "sequence", "error", "requests in flight and the used index did not move"
    ),
    ProblemCode(
        "lost_kick",
        "sequence",
        "warning",
        "the driver made buffers available without suppression, no kick came, no progress",
    ),
    ProblemCode(
        "lost_call",
        "sequence",
        "warning",
        "the device used buffers the driver asked to be told about, no call came",
    ),
    ProblemCode(
        "ring_reset_in_flight",
        "sequence",
        "warning",
        "the ring was stopped or reset with requests still in flight",
    ),
)

DATAPLANE_CODES: dict[str, ProblemCode] = {p.code: p for p in _DATAPLANE}
CODES: dict[str, ProblemCode] = {p.code: p for p in _ALL} | DATAPLANE_CODES


def worst(problems: list[Problem]) -> Severity | None:
    """The highest severity among ``problems``; None when there are none."""
    best: Severity | None = None
    for p in problems:
        code = CODES.get(p.code)
        sev = code.severity if code is not None else "error"
        sev = _OLD_NAMES.get(sev, sev)
        if best is None or RANK.get(sev, 0) < RANK[best]:
            best = sev
    return best


#: severities written before the one vocabulary (warn) or not used (chat)
_OLD_NAMES: dict[str, Severity] = {"warn": "warning", "chat": "note"}


def problem(code: str, text: str | None = None) -> Problem:
    """Make a Problem; ``text`` defaults to the code's summary."""
    if code not in CODES:
        raise KeyError(f"unknown problem code {code!r}")
    return Problem(code, text or CODES[code].summary)
