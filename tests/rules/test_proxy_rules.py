"""Each rule action through the in-process proxy, between raw front-end and back-end sockets."""

from __future__ import annotations

import os
import struct
import time

import pytest

from tests.proxy.conftest import relayed_pair, wait_until
from vuinspect.frames import event_info
from vuinspect.rules import RuleSet, parse_rule
from vuinspect.testing import wire
from vuinspect.testing.wire import recv_within as recv

pytestmark = pytest.mark.timeout(30)


def ruled(proxy, *rules: str):
    """A ``proxy`` maker whose server has ``rules`` before any connection arrives."""

    def make(routes, **kw):
        srv, rec = proxy(routes, **kw)
        srv.rules = RuleSet([parse_rule(r) for r in rules])
        return srv, rec

    return make


def notes(rec, n: int = 1) -> list[dict]:
    """The rule notes recorded (waits for ``n``)."""
    return rec.notes("rule", n)


def test_no_rules_no_matcher(sockdir, proxy):
    """Without rules the links never judge (the forwarding fast path is untouched)."""
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert recv(be).request == wire.GET_FEATURES
    links = list(srv._links)
    assert links and all(link._rules is None and not any(link._slow) for link in links)
    time.sleep(0.1)
    assert notes(rec, 0) == []


def test_delay_holds_one_direction_in_order(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(sockdir, ruled(proxy, "delay 400ms: name == GET_VRING_BASE"))
    t0 = time.monotonic()
    fe.sendall(wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, struct.pack("=II", 0, 0)))
    fe.sendall(wire.pack(wire.SET_OWNER))  # queued behind the delayed one
    # The other direction is not held: the back-end's message reaches the front-end at once.
    be.sendall(wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack(1)))
    assert recv(fe).request == wire.GET_FEATURES
    assert time.monotonic() - t0 < 0.3
    first = recv(be)
    held = time.monotonic() - t0
    assert first.request == wire.GET_VRING_BASE and held >= 0.38, held
    assert recv(be).request == wire.SET_OWNER  # order kept
    (n,) = notes(rec)
    assert n["action"] == "delay" and n["original"] == n["new"]


def test_a_name_rule_delays_the_reply_too_unless_it_says_not_reply(sockdir, proxy):
    """docs/rules.md: a reply carries its request's name, so ``name == X`` holds the
    request and its reply (the front-end waits twice the delay); ``and not reply`` only
    the request."""
    for rule, waits in (("", 2), (" and not reply", 1)):
        maker = ruled(proxy, f"delay 300ms: name == GET_VRING_BASE{rule}")
        where = os.path.join(sockdir, str(waits))
        os.mkdir(where)
        fe, be, srv, rec = relayed_pair(where, maker)
        t0 = time.monotonic()
        fe.sendall(wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, struct.pack("=II", 0, 0)))
        assert recv(be).request == wire.GET_VRING_BASE
        be.sendall(wire.pack(wire.GET_VRING_BASE, wire.REPLY_FLAGS, struct.pack("=II", 0, 7)))
        assert recv(fe).request == wire.GET_VRING_BASE
        took = time.monotonic() - t0
        assert 0.3 * waits - 0.02 <= took < 0.3 * waits + 0.25, (rule, took)
        fe.close()
        be.close()


def test_delay_does_not_hold_other_connections(sockdir, proxy):
    maker = ruled(proxy, "delay 1s: name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, maker)
    fe.sendall(wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, struct.pack("=II", 0, 0)))
    # A second connection through the same route is relayed at once.
    t0 = time.monotonic()
    listener = wire.listen(os.path.join(sockdir, "be.sock"))
    try:
        fe2 = wire.connect(os.path.join(sockdir, "px.sock"))
        be2, _ = listener.accept()
        fe2.sendall(wire.pack(wire.GET_FEATURES))
        assert recv(be2).request == wire.GET_FEATURES
        assert time.monotonic() - t0 < 0.5
        fe2.close()
        be2.close()
    finally:
        listener.close()
    assert recv(be).request == wire.GET_VRING_BASE  # still arrives, after its delay
    assert time.monotonic() - t0 >= 0.9


def test_drop_closes_fds_and_sends_nothing(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(
        sockdir, ruled(proxy, "drop: name == SET_VRING_CALL and payload.index == 1")
    )
    r, w = os.pipe()
    try:
        wire.send_raw(fe, wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(1)), [w])
        os.close(w)
        wire.send_raw(fe, wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(0)))
        got = recv(be)
        assert (got.request, got.u64) == (wire.SET_VRING_CALL, 0)  # index 1 never arrived
        got.close_fds()
        os.set_blocking(r, False)
        wait_until(lambda: _eof(r), what="the dropped fd to be closed by the proxy")
    finally:
        os.close(r)
    (n,) = notes(rec)
    assert n["action"] == "drop" and n["new"] == ""
    assert n["original"] == wire.pack(wire.SET_VRING_CALL, 1, wire.U64.pack(1)).hex()
    # Recorded as the front-end sent it, right after its note.
    wait_until(lambda: len(rec.data()) >= 2)
    kinds = [f.kind for f in rec.frames]
    after = rec.frames[kinds.index("note") + 1]
    assert (after.kind, after.data) == ("data", bytes.fromhex(n["original"]))


def _eof(fd: int) -> bool:
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


def test_reply_error_answers_the_frontend(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(sockdir, ruled(proxy, "reply-error: name == GET_CONFIG"))
    req = wire.pack(wire.GET_CONFIG, wire.FLAG_VERSION, struct.pack("=III", 0, 8, 0) + bytes(8))
    fe.sendall(req)
    reply = recv(fe)
    assert (reply.request, reply.flags, reply.payload) == (wire.GET_CONFIG, wire.REPLY_FLAGS, b"")
    fe.sendall(wire.pack(wire.SET_OWNER))
    assert recv(be).request == wire.SET_OWNER  # the back-end never saw GET_CONFIG
    wait_until(lambda: len(rec.data()) >= 3)
    data = rec.data()
    assert [(f.direction, f.data) for f in data[:2]] == [("f2b", req), ("b2f", reply.raw)]
    (n,) = notes(rec)
    assert n["action"] == "reply-error" and n["new"] == ""


def test_mask_features_offer_and_ack(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(sockdir, ruled(proxy, "mask-features VIRTIO_RING_F_EVENT_IDX"))
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert recv(be).request == wire.GET_FEATURES
    offered = (1 << 29) | (1 << 32) | (1 << 30)
    be.sendall(wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack(offered)))
    assert recv(fe).u64 == offered & ~(1 << 29)
    fe.sendall(wire.pack(wire.SET_FEATURES, wire.FLAG_VERSION, wire.U64.pack(offered)))
    assert recv(be).u64 == offered & ~(1 << 29)
    assert [n["action"] for n in notes(rec, 2)] == ["mask-features", "mask-features"]
    # The capture has what each receiver saw.
    wait_until(lambda: len(rec.data()) >= 3)
    assert all(not wire.U64.unpack_from(f.data, 12)[0] & (1 << 29) for f in rec.data()[1:3])


def test_disconnect_cuts_both_sides(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(sockdir, ruled(proxy, "disconnect: name == SET_VRING_ENABLE"))
    fe.sendall(wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256)))
    assert recv(be).request == wire.SET_VRING_NUM
    fe.sendall(wire.pack(wire.SET_VRING_ENABLE, wire.FLAG_VERSION, struct.pack("=II", 0, 1)))
    assert recv(be) is None and recv(fe) is None  # both see EOF; the message never arrived
    wait_until(lambda: rec.events("close"))
    (close,) = rec.events("close")
    assert close["by"] == "proxy" and "SET_VRING_ENABLE" in close["reason"]


def test_corrupt_once(sockdir, proxy):
    fe, be, srv, rec = relayed_pair(
        sockdir, ruled(proxy, "corrupt 4^=0xff once: name == SET_VRING_NUM")
    )
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256))
    fe.sendall(msg)
    fe.sendall(msg)
    assert recv(be).payload == struct.pack("=II", 0, 256 ^ 0xFF)
    assert recv(be).payload == struct.pack("=II", 0, 256)  # once: the second passes unchanged
    (n,) = notes(rec)
    assert n["original"] == msg.hex() and n["new"] != n["original"]
    assert srv.rules.rules[0].fired == 1
    assert "corrupt" in event_info([f for f in rec.frames if f.kind == "note"][0])["text"]


def test_stop_sends_held_messages_at_once(sockdir, proxy):
    """A stop does not wait out a delay: the held message is forwarded, then the pair closes."""
    fe, be, srv, rec = relayed_pair(sockdir, ruled(proxy, "delay 1m: name == GET_VRING_BASE"))
    fe.sendall(wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, struct.pack("=II", 0, 0)))
    notes(rec)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.5
    assert recv(be, 2).request == wire.GET_VRING_BASE
    assert recv(be, 2) is None


def test_wants_only_what_a_rule_can_act_on():
    """The relay's fast path skips judge for a request no rule, addon or intercept acts on:
    a request-named rule wants its request; mask-features only the feature messages."""
    from vuinspect.rules import ConnRules

    def wants(*texts: str) -> set[int]:
        conn = ConnRules(RuleSet([parse_rule(t) for t in texts]), 1, str)
        return {r for r in range(1, 50) if conn.wants("main", r)}

    assert wants("drop: name == SET_VRING_CALL") == {wire.SET_VRING_CALL}
    assert wants("mask-features VIRTIO_RING_F_EVENT_IDX") == {1, 2, 15, 16}
    assert wants("drop: payload.num == 3") == set(range(1, 50))  # no request named: all
