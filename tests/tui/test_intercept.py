"""Interactive intercept: the engine holds what the TUI's ``i`` filter matches until a/e/d/A.

The engine side runs an in-process proxy between raw front-end and back-end sockets
(the control commands are the JSON lines the TUI sends); the TUI side is a Pilot test
on a live source fed the frames such a proxy records, and a snapshot of what a person
sees (the prompt typed into, a held row).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest

from tests.proxy.conftest import proxy, relayed_pair, sockdir, wait_until  # noqa: F401
from vuinspect.holds import Intercept
from vuinspect.rules import RuleSet
from vuinspect.testing import wire

pytestmark = pytest.mark.timeout(60)

VRING_STATE = struct.Struct("=II")


def intercepted(proxy, filter_text: str = ""):  # noqa: F811 - the fixture's maker
    """A ``proxy`` maker whose server carries an Intercept (as the TUI's engine does)."""
    icpt = Intercept()

    def make(routes, **kw):
        srv, rec = proxy(routes, **kw)
        srv.rules = RuleSet([], intercept=icpt)
        return srv, rec

    if filter_text:
        icpt.set_filter(filter_text)
    return make, icpt


def recv(sock: socket.socket, timeout: float = 5.0) -> wire.Msg | None:
    sock.settimeout(timeout)
    try:
        return wire.recv_msg(sock)
    finally:
        sock.settimeout(None)


def nothing_within(sock: socket.socket, seconds: float = 0.5) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(None)
    return False


def holds(rec, action: str | None = None) -> list[dict]:
    return [
        i
        for i in rec.events("note")
        if str(i.get("rule", "")).startswith("intercept") and action in (None, i["action"])
    ]


def send(icpt: Intercept, **cmd) -> None:
    """A control line as the TUI writes it (through the same parser)."""
    assert icpt.command(json.dumps(cmd).encode()) is None, icpt.errors


def vring_base(index: int = 0, num: int = 0) -> bytes:
    return wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, VRING_STATE.pack(index, num))


def held_one(icpt: Intercept) -> int:
    wait_until(lambda: len(icpt.held) == 1, what="a held message")
    return next(iter(icpt.held))


def test_held_until_accepted(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy)
    fe, be, srv, rec = relayed_pair(sockdir, make)
    send(icpt, cmd="set-intercept", filter="name == GET_VRING_BASE")
    fe.sendall(vring_base(1))
    number = held_one(icpt)
    assert nothing_within(be)  # held: the back-end does not get it
    # The other direction flows while this one waits.
    be.sendall(wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack(1)))
    assert recv(fe, 1.0).request == wire.GET_FEATURES
    send(icpt, cmd="accept", id=number)
    got = recv(be, 2.0)
    assert got.raw == vring_base(1)
    wait_until(lambda: len(holds(rec, "accept")) == 1, what="the accept note")
    (held,) = holds(rec, "hold")
    assert held["hold"] == number and held["original"] == vring_base(1).hex()
    assert icpt.held == {}


def test_other_messages_pass(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert recv(be, 1.0).request == wire.GET_FEATURES
    assert icpt.held == {}


def test_drop_closes_fds_and_next_message_flows(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_CALL")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    r, w = os.pipe()
    try:
        wire.send_raw(fe, wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(1)), [w])
        os.close(w)
        number = held_one(icpt)
        assert nothing_within(be, 0.3)
        send(icpt, cmd="drop", id=number)
        fe.sendall(wire.pack(wire.SET_OWNER))
        assert recv(be, 2.0).request == wire.SET_OWNER  # the dropped one never arrived
        os.set_blocking(r, False)
        wait_until(lambda: _eof(r), what="the dropped message's fd to be closed")
    finally:
        os.close(r)
    wait_until(lambda: len(holds(rec, "drop")) == 1, what="the drop note")
    assert holds(rec, "drop")[0]["new"] == ""


def _eof(fd: int) -> bool:
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


def test_edit_reencodes_the_payload(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_NUM")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 256)))
    number = held_one(icpt)
    payload = dict(icpt.held[number].msg.payload)
    assert payload["num"] == 256
    payload["num"] = 128
    send(icpt, cmd="edit", id=number, payload=payload)
    got = recv(be, 2.0)
    assert got.raw == wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 128))
    wait_until(lambda: len(holds(rec, "edit")) == 1, what="the edit note")
    (note,) = holds(rec, "edit")
    assert note["new"] == got.raw.hex() and note["original"] != note["new"]


def test_edit_with_an_unknown_field_is_refused_and_stays_held(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_NUM")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 256)))
    number = held_one(icpt)
    err = icpt.command(json.dumps({"cmd": "edit", "id": number, "payload": {"bogus": 1}}))
    assert err and "bogus" in err
    assert number in icpt.held and nothing_within(be, 0.2)
    send(icpt, cmd="accept-all")
    assert recv(be, 2.0).request == wire.SET_VRING_NUM


def test_order_kept_behind_a_held_message(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(0))
    fe.sendall(wire.pack(wire.SET_OWNER))  # waits behind the held one, as for a slow peer
    number = held_one(icpt)
    assert nothing_within(be, 0.3)
    send(icpt, cmd="accept", id=number)
    assert recv(be).request == wire.GET_VRING_BASE
    assert recv(be).request == wire.SET_OWNER


def test_clearing_the_filter_releases(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(0))
    held_one(icpt)
    send(icpt, cmd="set-intercept", filter="")
    assert recv(be, 2.0).request == wire.GET_VRING_BASE
    fe.sendall(vring_base(1))
    assert recv(be, 2.0).request == wire.GET_VRING_BASE  # no longer held


def test_stop_releases_what_is_held(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(3))
    held_one(icpt)
    t0 = time.monotonic()
    srv.stop()
    assert recv(be, 2.0).raw == vring_base(3)  # a stop (the user quitting) accepts it
    assert time.monotonic() - t0 < 2.0
    assert [n["text"] for n in holds(rec, "accept")] == ["intercept #1: accepted (proxy stopped)"]


def test_bad_commands_are_reported_not_fatal():
    icpt = Intercept()
    for line in (b"not json", b"[]", b'{"cmd": "nope"}', b'{"cmd": "accept"}'):
        assert icpt.command(line)
    assert icpt.command(b'{"cmd": "set-intercept", "filter": "name =="}')
    assert icpt.match is None
    assert icpt.command(b'{"cmd": "accept", "id": 7}') == "no held message #7"
