"""Every problem code has a message that triggers it, and nothing raises on bad input."""

from __future__ import annotations

import struct

import pytest

from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.problems import CODES, DATAPLANE_CODES

Q = struct.Struct("<Q").pack
REGION = struct.pack("<QQQQ", 0, 0x1000, 0x7F0000000000, 0)


def m(req: int, flags: int, payload: bytes = b"", size: int | None = None) -> bytes:
    return struct.pack("<III", req, flags, len(payload) if size is None else size) + payload


F2B, B2F = ("main", "f2b"), ("main", "b2f")
BF2B, BB2F = ("backend", "f2b"), ("backend", "b2f")

# negotiation prefixes
NEG_ACK = [
    (F2B, m(1, 1)),
    (B2F, m(1, 5, Q(1 << 30 | 1 << 32))),
    (F2B, m(15, 1)),
    (B2F, m(15, 5, Q(0x0B))),
    (F2B, m(16, 1, Q(0x0B))),
]  # MQ LOG_SHMFD REPLY_ACK
NEG_NO_ACK = [
    (F2B, m(1, 1)),
    (B2F, m(1, 5, Q(1 << 30 | 1 << 32))),
    (F2B, m(15, 1)),
    (B2F, m(15, 5, Q(0x1))),
    (F2B, m(16, 1, Q(0x1))),
]
NEG_NO_PF = [(F2B, m(1, 1)), (B2F, m(1, 5, Q(1 << 32))), (F2B, m(2, 1, Q(1 << 32)))]

CASES: dict[str, list] = {
    "truncated_header": [(F2B, b"\x01\x00\x00\x00\x01")],
    "truncated_payload": [(F2B, m(2, 1, Q(1))[:15])],
    "oversize": [(F2B, m(1, 1, size=1 << 20) + b"junk")],
    "framing_lost": [(F2B, b"\xff" * 40 + m(1, 1))],
    "bad_version": [(F2B, m(1, 2))],
    "reserved_flags": [(F2B, m(1, 0x11))],
    "wrong_size": [(F2B, m(8, 1, b"\x01\x00\x00"))],
    "bad_count": [(F2B, m(5, 1, struct.pack("<II", 3, 0) + REGION), ("memfd",))],
    "nonzero_padding": [(F2B, m(5, 1, struct.pack("<II", 1, 7) + REGION), ("memfd",))],
    "wrong_direction": [(F2B, m(3, 5))],
    "fd_count": [(F2B, m(12, 1, Q(0)))],
    "fds_truncated": [(F2B, m(12, 1, Q(0)), ("truncated: kernel dropped fds (MSG_CTRUNC)",))],
    "unknown_request": [(F2B, m(99, 1))],
    "reply_flags": [(F2B, m(1, 1)), (B2F, m(1, 0xD, Q(0)))],
    "reply_to_nothing": [(B2F, m(1, 5, Q(0)))],
    "reply_mismatch": [(F2B, m(1, 1)), (B2F, m(15, 5, Q(0)))],
    "missing_reply": [*NEG_ACK, (F2B, m(3, 9)), (F2B, m(1, 1))],
    "unexpected_reply": [*NEG_NO_ACK, (F2B, m(3, 9)), (B2F, m(3, 5, Q(0)))],
    "request_while_waiting": [(F2B, m(1, 1)), (F2B, m(15, 1))],
    "feature_not_negotiated": [*NEG_ACK, (F2B, m(34, 1))],
    "features_not_offered": [*NEG_ACK, (F2B, m(2, 1, Q(1 << 30 | 1 << 32 | 1 << 34)))],
    "need_reply_without_ack": [*NEG_NO_ACK, (F2B, m(3, 9))],
    "enable_without_protocol_features": [*NEG_NO_PF, (F2B, m(18, 1, struct.pack("<II", 0, 1)))],
    "vring_not_started": [(F2B, m(11, 1, struct.pack("<II", 0, 0)))],
    "vring_out_of_range": [
        *NEG_ACK,
        (F2B, m(17, 1)),
        (B2F, m(17, 5, Q(1))),
        (F2B, m(8, 1, struct.pack("<II", 5, 256))),
    ],
    "too_many_regions": [(F2B, m(5, 1, struct.pack("<II", 9, 0) + REGION * 9), ("memfd",) * 9)],
    "fds_without_backend_send_fd": [*NEG_ACK, (BB2F, m(2, 1), ("eventfd",))],
    "ack_error": [*NEG_ACK, (F2B, m(3, 9)), (B2F, m(3, 5, Q(22)))],
}


def run(frames: list) -> list:
    p = Pipeline()
    out = list(p.feed(event_frame("open", 0, 1, {"label": "t"})))
    for i, item in enumerate(frames):
        (channel, direction), data = item[0], item[1]
        fds = item[2] if len(item) > 2 else ()
        out += p.feed(Frame(i + 1, 1, channel, direction, data, fds))
    out += p.close()
    return out


def test_every_code_has_a_case():
    # the data-plane codes (ring/notify frames) have theirs in tests/dataplane/
    assert set(CASES) == set(CODES) - set(DATAPLANE_CODES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_is_triggered(code):
    messages = run(CASES[code])
    found = [p for msg in messages for p in msg.problems if p.code == code]
    assert found, [(m.name, m.problem_codes) for m in messages]
    assert all(p.text for p in found)


def test_nothing_is_dropped_when_framing_is_lost():
    data = b"\xff" * 40 + m(1, 1) + m(15, 1)
    messages = [x for x in run([(F2B, data)]) if not x.is_event]
    assert b"".join(x.raw for x in messages) == data
    assert [x.name for x in messages] == ["RAW", "GET_FEATURES", "GET_PROTOCOL_FEATURES"]


def test_clean_start_has_no_problems():
    from vuinspect.samples import device_start, every_message

    for frames in (device_start(), every_message()):
        msgs = list(Pipeline().run(frames))
        assert [m.problem_codes for m in msgs if m.problems] == []


def test_severities_are_error_warning_note_and_iotlb_padding_is_a_note():
    """QEMU 7.2 leaves the 6 padding bytes of every IOTLB update uninitialised: a note,
    which the bare `problems` filter (warning and above) does not show."""
    from vuinspect.filter import compile_filter
    from vuinspect.protocol.problems import SEVERITIES

    assert {c.severity for c in CODES.values()} <= set(SEVERITIES)
    iotlb = struct.pack("<QQQBB6s", 0x1000, 0x1000, 0x7F0000001000, 3, 2, b"\xaa" * 6)
    neg = [
        (F2B, m(1, 1)),
        (B2F, m(1, 5, Q(1 << 30 | 1 << 32 | 1 << 33))),
        (F2B, m(2, 1, Q(1 << 30 | 1 << 32 | 1 << 33))),
        (F2B, m(15, 1)),
        (B2F, m(15, 5, Q(1 << 11 | 1 << 3))),
        (F2B, m(16, 1, Q(1 << 11 | 1 << 3))),
    ]
    msgs = run([*neg, (F2B, m(22, 9, iotlb)), (B2F, m(22, 5, Q(0)))])
    update = next(x for x in msgs if x.name == "IOTLB_MSG")
    assert update.problem_codes == ["nonzero_padding"], update.problem_codes
    assert update.severity == "note" and update.to_dict()["problems"][0]["severity"] == "note"
    assert not compile_filter("problems")(update)
    assert compile_filter("problems == nonzero_padding")(update)
    assert compile_filter("severity == note")(update)
