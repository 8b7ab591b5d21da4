"""A Link hands every frame to one FrameSink (sink.py): lane, data, event, nothing else."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from vuinspect.frames import Frame
from vuinspect.proxy.backlog import Backlog, Unsent, send_now
from vuinspect.proxy.ending import Ended, EndReason, close_info
from vuinspect.proxy.queue import FrameQueue
from vuinspect.proxy.relay import Link
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.proxy.sink import DirectSink, FrameSink
from vuinspect.testing import wire
from vuinspect.verdict import Verdict

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


# -- the link's helpers, on their own (backlog.py, ending.py) ------------------------------


def test_the_backlog_keeps_order_and_sends_fds_with_their_message_once_there_is_room() -> None:
    px, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    px.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    backlog = Backlog((px, px), lambda ts, src: None)
    first = bytes(range(256)) * 64  # 16 KiB: more than the socket takes at once
    sent = send_now(px, memoryview(first), [])
    assert 0 < sent < len(first)
    efd = wire.eventfd()
    kick = wire.pack(wire.SET_VRING_KICK, 1, wire.U64.pack(0))
    backlog.out[0].append(Unsent(memoryview(first)[sent:], []))
    backlog.out[0].append(Unsent(memoryview(kick), [efd]))
    assert backlog.flush(0) is False  # still full: nothing reordered, the fd still ours
    os.fstat(efd)
    got = b""
    while len(got) < len(first):
        got += peer.recv(len(first) - len(got))
        backlog.flush(0)
    assert got == first and backlog.flush(0) is True
    msg = wire.recv_msg(peer)
    assert msg.raw == kick and len(msg.fds) == 1  # the fd went with its own message
    msg.close_fds()
    with pytest.raises(OSError):
        os.fstat(efd)  # our copy closed once sent
    px.close()
    peer.close()


def test_a_delayed_message_waits_for_its_time_and_then_goes() -> None:
    px, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    backlog = Backlog((px, px), lambda ts, src: None)
    msg = wire.pack(wire.GET_FEATURES, 1)
    due, hold = backlog.delay(Verdict(data=msg, delay_s=0.05))
    assert hold is None and backlog.held == [1]
    backlog.out[0].append(Unsent(memoryview(msg), [], due, hold))
    assert backlog.waiting(0) and backlog.due_now() == []
    assert 0 <= backlog.wait_ms() <= 51  # type: ignore[operator]
    assert backlog.flush(0) is False
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(64)
    time.sleep(0.06)
    assert backlog.due_now() == [0]
    assert backlog.flush(0) is True and backlog.held == [0] and backlog.wait_ms() is None
    assert peer.recv(64) == msg
    px.close()
    peer.close()


def test_the_first_end_reason_wins_and_the_close_happens_once() -> None:
    end = EndReason()
    end.note(1, "eof", "back-end closed the connection")
    with pytest.raises(Ended):
        end.end(-1, "proxy", "proxy stopped")  # a consequence, not the cause
    first = end.close_once()
    assert first == (1, "eof", "back-end closed the connection")
    assert end.close_once() is None
    assert close_info(first, ("frontend", "backend").__getitem__) == {
        "reason": "back-end closed the connection",
        "by": "backend",
    }
    assert close_info((-1, "send", "x"), str) == {"reason": "x", "by": "proxy", "error": True}
    assert EndReason().close_once() == (-1, "proxy", "closed")
