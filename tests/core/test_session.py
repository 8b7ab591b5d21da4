"""session.Session on its own: pairing replies with what waits, the problems pairing finds,
what a close leaves owed, the connection's open info, the decode context's cache, a rule's
dropped SET_VRING_CALL (the per-request effects are tests/protocol/test_effects.py)."""

from __future__ import annotations

import json
import struct

import pytest

from vuinspect.dataplane.track import MAX_RINGS
from vuinspect.decoder import RawMessage, parse_header
from vuinspect.message import Message
from vuinspect.protocol.requests import FrontendRequest
from vuinspect.session import Session
from vuinspect.testing import wire

T0 = 1_000_000_000


class Wire:
    """Framed messages into one session, as the pipeline hands them over."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.frame = 0

    def __call__(
        self,
        request: int,
        flags: int = wire.FLAG_VERSION,
        payload: bytes = b"",
        *,
        direction: str = "f2b",
        channel: str = "main",
        fds: tuple[str, ...] = (),
        us: int = 0,
    ) -> Message:
        self.frame += 1
        data = wire.pack(request, flags, payload)
        raw = RawMessage(
            data, fds, T0 + us * 1000, self.frame, *parse_header(data, self.session.order)
        )
        return self.session.handle(raw, self.frame, direction, channel)

    def reply(self, request: int, payload: bytes = b"", us: int = 0) -> Message:
        return self(request, wire.REPLY_FLAGS, payload, direction="b2f", us=us)


def codes(msg: Message) -> list[str]:
    return [p.code for p in msg.problems]


U64 = struct.Struct("<Q")


def test_replies_pair_with_their_request_and_measure_latency():
    s = Session(1)
    send = Wire(s)
    q = send(wire.GET_FEATURES, us=0)
    assert [p.message for p in s.waiting()] == [q]
    r = send.reply(wire.GET_FEATURES, U64.pack(0x1_0000_0000), us=30)
    assert (r.reply_to, q.reply_in, r.latency_us) == (q.frame, r.frame, 30.0)
    assert s.waiting() == [] and codes(r) == []
    st = s.stats["main:GET_FEATURES"]
    assert (st.count, st.replies, s.messages) == (1, 1, 2)


def test_a_request_while_others_wait_is_one_problem_however_many_wait():
    s = Session(1)
    send = Wire(s)
    first = send(wire.GET_FEATURES)
    second = send(wire.GET_PROTOCOL_FEATURES)
    third = send(wire.GET_QUEUE_NUM)
    assert codes(first) == []
    assert second.problems[0].text == "GET_FEATURES (frame 1) still waits for its reply"
    assert third.problems[0].text == (
        "GET_FEATURES (frame 1) still waits for its reply (and 1 later requests)"
    )
    assert len(s.waiting()) == 3


def test_out_of_order_mismatched_and_orphan_replies():
    s = Session(1)
    send = Wire(s)
    first = send(wire.GET_FEATURES)
    second = send(wire.GET_PROTOCOL_FEATURES)
    late = send.reply(wire.GET_PROTOCOL_FEATURES, U64.pack(0))
    assert codes(late) == ["reply_mismatch"] and "out of order" in late.problems[0].text
    assert late.reply_to == second.frame  # still paired
    wrong = send.reply(wire.GET_QUEUE_NUM, U64.pack(1))
    assert codes(wrong) == ["reply_mismatch"] and wrong.reply_to is None
    assert wrong.problems[0].text == "reply id 17 but GET_FEATURES (id 1, frame 1) waits"
    ok = send.reply(wire.GET_FEATURES, U64.pack(0))
    assert ok.reply_to == first.frame and codes(ok) == []
    orphan = send.reply(wire.GET_FEATURES, U64.pack(0))
    assert codes(orphan) == ["reply_to_nothing"]


def test_a_close_marks_only_the_replies_that_were_due():
    s = Session(1)
    send = Wire(s)
    owner = send(wire.SET_OWNER, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY)
    # REPLY_ACK not known: a reply may come, none is due; the next request replaces it
    assert [p.expected for p in s.waiting()] == [False]
    asked = send(wire.GET_FEATURES)
    assert codes(asked) == [] and [p.message for p in s.waiting()] == [asked]
    left = s.on_close(T0 + 5, "peer closed")
    assert [p.message for p in left] == [asked] and owner.problems == []
    assert codes(asked) == ["missing_reply"] and "peer closed" in asked.problems[0].text
    assert (s.closed_ns, s.close_reason) == (T0 + 5, "peer closed")
    quiet = Session(2)
    Wire(quiet)(wire.SET_OWNER, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY)
    assert len(quiet.waiting()) == 1 and quiet.on_close(T0, "peer closed") == []


def test_open_info_sets_label_device_and_byte_order():
    s = Session(4)
    assert s.label == "conn 4" and s.order == "<"
    s.on_open(T0, {"label": "blk0.sock", "device": "blk", "byteorder": "big"})
    assert (s.label, s.device, s.order, s.opened_ns, s.seen_start) == (
        "blk0.sock",
        "blk",
        ">",
        T0,
        True,
    )
    given = Session(5, device="net")
    given.on_open(T0, {"device": "blk"})
    assert given.device == "net"  # a device named by the user wins over the capture's


def test_the_context_is_kept_until_negotiation_changes_it():
    s = Session(1)
    send = Wire(s)
    ctx = s.context()
    assert s.context() is ctx and not ctx.packed and s.protocol_has(1) is None
    send(wire.SET_FEATURES, payload=U64.pack(1 << 34))  # VIRTIO_F_RING_PACKED
    assert s.packed and s.context() is not ctx and s.context().packed
    send(wire.SET_PROTOCOL_FEATURES, payload=U64.pack(0b1001))
    assert s.protocol_has(0b1000) is True and s.protocol_has(0b10) is False


def _note(data: bytes, **kw) -> dict:
    return {"action": "drop", "direction": "f2b", "original": data.hex(), **kw}


def test_a_dropped_set_vring_call_leaves_the_backend_without_a_call_fd():
    call = wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, U64.pack(1))
    s = Session(1)
    send = Wire(s)
    s.on_note(_note(call, fired=False))  # a rule that did not act: nothing dropped
    s.on_note(_note(call, direction="b2f"))
    s.on_note(json.loads(json.dumps(_note(call[:-1]))))  # not a SET_VRING_CALL's size
    send(wire.SET_VRING_CALL, payload=U64.pack(1), fds=("eventfd",))
    assert s.dataplane.call_fds[1] == "fd" and s.vrings[1].call == "eventfd"
    s.on_note(_note(call))
    send(wire.SET_VRING_CALL, payload=U64.pack(1), fds=("eventfd",))
    assert s.dataplane.call_fds[1] == "none"
    send(wire.SET_VRING_CALL, payload=U64.pack(1 | 1 << 8))  # the next one, NOFD
    assert s.dataplane.call_fds[1] == "nofd"


def test_vring_indices_beyond_the_cap_hold_no_state():
    """A peer naming ever new vrings must not grow the session: past MAX_RINGS a message's
    vring is not kept, below it as before.  (No problem for it yet: the Lua dissector
    would have to report the same one.)"""
    s = Session(1)
    send = Wire(s)
    state = struct.Struct("<II")
    for index in range(MAX_RINGS - 2, MAX_RINGS + 3000):
        send(wire.SET_VRING_NUM, payload=state.pack(index, 256))
    assert sorted(s.vrings) == [MAX_RINGS - 2, MAX_RINGS - 1]
    assert s.vrings[MAX_RINGS - 1].num == 256
    # a reply's effects (GET_VRING_BASE stops its request's vring) create none either
    send(wire.GET_VRING_BASE, payload=state.pack(MAX_RINGS + 7, 0))
    send.reply(wire.GET_VRING_BASE, state.pack(MAX_RINGS + 7, 5))
    send(FrontendRequest.VRING_KICK, payload=state.pack(1 << 31, 0))
    assert len(s.vrings) == 2 and MAX_RINGS + 7 not in s.vrings


def test_owed_is_the_waiting_requests_a_reply_is_due_for_and_started_ns_the_start():
    s = Session(1)
    assert s.owed() == [] and s.started_ns is None
    send = Wire(s)
    asked = send(wire.GET_FEATURES, us=3)
    # REPLY_ACK not known: SET_OWNER's NEED_REPLY makes a reply possible, not due
    owner = send(wire.SET_OWNER, wire.FLAG_VERSION | wire.FLAG_NEED_REPLY, us=4)
    assert [p.message for p in s.waiting()] == [asked, owner]
    assert [p.message for p in s.owed()] == [asked]
    assert s.started_ns == T0 + 3000  # no open event: the first message
    s.on_open(T0, {})
    assert s.started_ns == T0  # the open event


def test_ever_new_unknown_requests_cannot_grow_the_stats():
    """Each unknown request code is its own stats kind (UNKNOWN_<n>) up to state.MAX_KINDS;
    past it new kinds are counted together, none lost: a peer naming 2^32 codes holds
    bounded memory."""
    from vuinspect.state import MAX_KINDS

    s = Session(1)
    send = Wire(s)
    for i in range(MAX_KINDS + 50):
        send(10_000 + i)
    assert len(s.stats) <= MAX_KINDS + 1
    assert sum(st.count for st in s.stats.values()) == MAX_KINDS + 50
    assert s.stats["main:UNKNOWN_10000"].count == 1


def test_a_peer_that_never_answers_cannot_grow_the_waiting_queue():
    """Requests past MAX_PENDING waiting push the oldest out (missing_reply on it): a
    flooding front-end and a silent back-end hold bounded memory, a reply's scan too."""
    from vuinspect.state import MAX_PENDING

    s = Session(1)
    send = Wire(s)
    sent = [send(wire.GET_FEATURES) for _ in range(MAX_PENDING + 5)]
    assert len(s.waits("main") or ()) == MAX_PENDING
    assert len(s.pending["main"]) == MAX_PENDING  # (the old name: a read-only copy)
    with pytest.raises(TypeError):
        s.pending["main"] = []  # type: ignore[index]
    assert all("missing_reply" in codes(m) for m in sent[:5])
    assert "missing_reply" not in codes(sent[5])
    r = send.reply(wire.GET_FEATURES, U64.pack(1))
    assert r.reply_to == sent[5].frame


def test_a_sessions_problem_count_is_a_number_and_problems_only_its_old_read_only_name():
    """Message.problems is a list of Problem objects; a session counts them: problem_count
    (``problems`` stays readable for addon scripts written against it, never writable)."""
    import pytest

    s = Session(1)
    send = Wire(s)
    send(wire.GET_FEATURES, wire.FLAG_VERSION | 0x80)  # reserved flag: one problem
    assert s.problem_count == 1
    with pytest.warns(DeprecationWarning, match="problem_count"):
        assert s.problems == 1
    with pytest.raises(AttributeError):
        s.problems = 2  # type: ignore[misc]
    (st,) = s.stats.values()  # a request kind's count, the same name
    assert st.problem_count == 1
    with pytest.warns(DeprecationWarning, match="problem_count"):
        assert st.problems == 1
    # the data plane's count of ring/notify problems, the same name
    assert s.dataplane.problem_count == 0
    with pytest.warns(DeprecationWarning, match="problem_count"):
        assert s.dataplane.problems == 0
