"""A Link hands every frame to one FrameSink (sink.py): lane, data, event, nothing else."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from vuinspect.frames import Frame
from vuinspect.proxy.queue import FrameQueue
from vuinspect.proxy.relay import Link
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.proxy.sink import DirectSink, FrameSink
from vuinspect.testing import wire

from .test_transparency import _Owner

pytestmark = pytest.mark.timeout(30)


class SpySink:
    """A FrameSink that logs which of its methods the relay called."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.lanes: list[tuple[int, str, str]] = []

    def lane(self, conn: int, channel: str, direction: str):
        self.lanes.append((conn, channel, direction))

        def record(ts: int, data: bytes) -> None:
            self.calls.append(("lane", direction, data))

        return record

    def data(self, ts, conn, channel, direction, data, fds=()) -> None:
        self.calls.append(("data", direction, data, fds))

    def event(self, frame: Frame) -> None:
        self.calls.append(("event", frame.kind))


def _pair(sink: FrameSink | None):
    fe, px_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    px_b, be = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    owner = _Owner()
    owner.sink = sink  # type: ignore[assignment]
    link = Link(owner, "main", (px_a, px_b), ("frontend", "backend"))
    link.start()
    return fe, be, owner


def test_every_frame_goes_through_the_sink_and_the_lane_is_bound_once() -> None:
    spy = SpySink()
    fe, be, owner = _pair(spy)
    plain = [wire.pack(wire.GET_FEATURES, 1) for _ in range(20)]
    for m in plain:  # one at a time: each is a whole message, the fast path
        fe.sendall(m)
        assert wire.recv_msg(be).raw == m
        be.sendall(m)
        assert wire.recv_msg(fe).raw == m
    efd = wire.eventfd()
    kick = wire.pack(wire.SET_VRING_KICK, 1, wire.U64.pack(0))
    wire.send_raw(fe, kick, [efd])
    got = wire.recv_msg(be)
    assert got.raw == kick and len(got.fds) == 1
    got.close_fds()
    part = wire.pack(wire.SET_VRING_NUM, 1, struct.pack("=II", 0, 256))[:8]
    fe.sendall(part)
    fe.close()  # mid-message: forwarded as it came, and the relay says so in a note
    rest = b""
    while chunk := be.recv(4096):
        rest += chunk
    assert rest == part
    be.close()
    assert owner.done.wait(5)
    assert spy.lanes == [(999, "main", "f2b"), (999, "main", "b2f")]  # bound once per direction
    lanes = [c for c in spy.calls if c[0] == "lane"]
    assert [c[2] for c in lanes] == [m for m in plain for _ in (0, 1)]
    datas = [c for c in spy.calls if c[0] == "data"]
    assert datas[0] == ("data", "f2b", kick, ("eventfd",))
    assert ("event", "note") in spy.calls
    assert datas[-1] == ("data", "f2b", part, ())
    assert {c[0] for c in spy.calls} == {"lane", "data", "event"}
    os.close(efd)


def test_without_a_sink_nothing_is_recorded_and_all_is_forwarded() -> None:
    fe, be, owner = _pair(None)
    msgs = [wire.pack(wire.GET_FEATURES, 1), wire.pack(wire.SET_OWNER, 1)]
    for m in msgs:
        fe.sendall(m)
        assert wire.recv_msg(be).raw == m
    fe.close()
    assert wire.recv_msg(be) is None
    be.close()
    assert owner.done.wait(5)


def test_the_server_feeds_a_callable_through_a_queue_and_a_sink_directly(sockdir) -> None:
    route = [Route(f"{sockdir}/px.sock", f"{sockdir}/be.sock")]
    frames: list[Frame] = []
    srv = ProxyServer(route, frames.append)
    assert isinstance(srv.queue, FrameQueue) and srv.sink is srv.queue
    direct = DirectSink(frames.append)
    assert isinstance(direct, FrameSink)
    srv = ProxyServer(route, direct)
    assert srv.queue is None and srv.sink is direct
    assert ProxyServer(route, None).sink is None
