"""Peers cannot tell a proxied connection from a direct one: same bytes, same fds."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from vuinspect.frames import Frame
from vuinspect.proxy.relay import Link
from vuinspect.proxy.server import Route
from vuinspect.proxy.sink import DirectSink
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend

from .conftest import relayed_pair, stop_when_idle, wait_until

pytestmark = pytest.mark.timeout(60)


def session(path: str) -> Frontend:
    """A front-end session touching every kind of traffic the test peers have."""
    fe = Frontend(wire.connect(path))
    fe.handshake(regions=3, backend_channel=True)
    fe.round_trips(20)
    fe.round_trips(5, with_fd=True)
    fe.call(wire.GET_CONFIG, struct.pack("=III", 0, 16, 0) + bytes(16))
    fe.stop_queues()
    return fe


def transcript(fe: Frontend, be) -> dict:
    return {
        "fe_sent": [data for data, _ in fe.sent],
        "fe_sent_nfds": [len(inodes) for _, inodes in fe.sent],
        "fe_received": [m.raw for m in fe.received],
        "fe_received_nfds": [len(m.inodes) for m in fe.received],
        "be_received": [m.raw for m in be.received],
        "be_received_nfds": [len(m.inodes) for m in be.received],
        "be_fd_reads": [m.fd_reads for m in be.received],
        "be_sent": list(be.sent),
        "channel_requests": [m.raw for m in fe.channel_received],
        "channel_request_nfds": [len(m.inodes) for m in fe.channel_received],
        "channel_replies": [m.raw for m in be.channel_replies],
    }


def run_session(connect_path: str, bsrv) -> tuple[dict, Frontend, object]:
    fe = session(connect_path)
    wait_until(
        lambda: bsrv.backends and bsrv.backends[-1].channel_done.is_set(), what="back-end channel"
    )
    fe.close()
    bsrv.join()
    be = bsrv.backends[-1]
    assert be.error is None
    return transcript(fe, be), fe, be


def test_direct_and_proxied_runs_are_identical(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server(backend_requests=2, notifier_fd=True)
    direct, fe_d, be_d = run_session(bsrv.path, bsrv)

    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    proxied, fe_p, be_p = run_session(px, bsrv)

    assert proxied == direct
    assert (
        sum(direct["be_received_nfds"]) == 3 + 2 + 5 + 1
    )  # memfds, kick/call, round trips, channel
    assert set(direct["be_fd_reads"]) == {0, 1}  # fds always arrived with one read of their message

    # fd identity: every fd the back-end got is the very file the front-end sent...
    sent_inodes = [inodes for _, inodes in fe_p.sent if inodes]
    got_inodes = [m.inodes for m in be_p.received if m.inodes]
    assert len(sent_inodes) == len(got_inodes)
    for sent, got in zip(sent_inodes, got_inodes, strict=True):
        if sent != got:
            # ...except the back-end channel socket, which the proxy swaps for its own pair.
            assert len(got) == 1
    swapped = [i for i, (s, g) in enumerate(zip(sent_inodes, got_inodes, strict=True)) if s != g]
    assert len(swapped) == 1
    direct_sent = [inodes for _, inodes in fe_d.sent if inodes]
    direct_got = [m.inodes for m in be_d.received if m.inodes]
    assert direct_sent == direct_got
    # The memfd on the back-end channel reached the front-end as the same file.
    assert fe_p.channel_received[-1].inodes == be_p.channel_sent_inodes[-1]

    # The capture holds exactly the forwarded bytes, main channel in order.
    srv.stop()
    f2b = b"".join(f.data for f in rec.data(channel="main") if f.direction == "f2b")
    assert f2b == b"".join(direct["fe_sent"])
    b2f = b"".join(f.data for f in rec.data(channel="main") if f.direction == "b2f")
    assert b2f == b"".join(direct["be_sent"])


def test_backend_channel_is_relayed_and_captured(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server(backend_requests=1, notifier_fd=True)
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    fe = Frontend(wire.connect(px))
    fe.handshake(backend_channel=True)
    wait_until(lambda: bsrv.backends[0].channel_done.is_set(), what="back-end channel exchange")
    fe.close()
    bsrv.join()
    be = bsrv.backends[0]
    assert [m.raw for m in be.channel_replies] == [
        wire.pack(2, 5, wire.U64.pack(0)),
        wire.pack(3, 5, wire.U64.pack(0)),
    ]
    stop_when_idle(srv)
    back = rec.data(channel="backend")
    assert [(f.direction, struct.unpack_from("=II", f.data)) for f in back] == [
        ("b2f", (2, 0x9)),
        ("f2b", (2, 0x5)),
        ("b2f", (3, 0x9)),
        ("f2b", (3, 0x5)),
    ]
    assert back[2].fds == ("memfd:host-notifier size=4KiB",)
    setreq = [f for f in rec.data(channel="main") if struct.unpack_from("=I", f.data)[0] == 21]
    assert setreq[0].fds[0].startswith("socket:unix-stream")
    closes = rec.events("close")
    assert {c["_channel"] for c in closes} == {"main", "backend"}


def test_253_fds_in_one_message(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    fe = Frontend(wire.connect(px))
    fds = [wire.eventfd() for _ in range(253)]
    try:
        fe.send(
            wire.SET_MEM_TABLE, b"\0" * 8, flags=wire.FLAG_VERSION | wire.FLAG_NEED_REPLY, fds=fds
        )
        reply = fe.recv()
    finally:
        for fd in fds:
            os.close(fd)
    assert reply.flags == 5
    got = bsrv.backends[0].received[0]
    assert got.inodes == fe.sent[0][1]
    assert len(got.inodes) == 253
    fe.close()
    bsrv.join()
    srv.stop()
    assert rec.data()[0].fds == ("eventfd",) * 253


def test_message_split_over_many_writes(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    sock = wire.connect(px)
    fd = wire.memfd("split", 4096)
    data = wire.pack(
        wire.SET_MEM_TABLE,
        wire.FLAG_VERSION | wire.FLAG_NEED_REPLY,
        struct.pack("=II", 1, 0) + struct.pack("=QQQQ", 0, 4096, 0x1000, 0),
    )
    wire.send_raw(sock, data[:1], [fd])
    for i in range(1, len(data)):
        sock.sendall(data[i : i + 1])
        time.sleep(0.001)
    reply = wire.recv_msg(sock)
    assert reply is not None and reply.flags == 5
    got = bsrv.backends[0].received[0]
    assert got.raw == data and got.inodes == [wire.fd_inode(fd)] and got.fd_reads == 1
    os.close(fd)
    sock.close()
    bsrv.join()
    srv.stop()
    frames = rec.data()
    assert frames[0].data == data  # one frame per message, however it was written


def test_several_messages_in_one_write(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    fe = Frontend(wire.connect(px))
    batch = wire.pack(wire.SET_OWNER) + wire.pack(wire.GET_FEATURES) + wire.pack(wire.GET_QUEUE_NUM)
    fe.send_raw(batch)
    r1, r2 = fe.recv(), fe.recv()
    assert (r1.request, r2.request) == (wire.GET_FEATURES, wire.GET_QUEUE_NUM)
    fe.close()
    bsrv.join()
    srv.stop()
    assert [m.raw for m in bsrv.backends[0].received] == [batch[:12], batch[12:24], batch[24:]]
    f2b = [f.data for f in rec.data() if f.direction == "f2b"]
    assert f2b == [batch[:12], batch[12:24], batch[24:]]


class _Owner:
    """The smallest LinkOwner: records frames, fixed orientation."""

    def __init__(self) -> None:
        self.conn = 999
        self.frames: list[Frame] = []
        self.sink = DirectSink(self.frames.append)
        self.done = threading.Event()

    def orient(self, link, side):
        return link.roles

    def intercept(self, link, data, fds):
        return fds, tuple("fd" for _ in fds)

    def link_done(self, link, info) -> None:
        self.info = info
        self.done.set()


def test_fds_of_a_later_message_are_not_glued_to_an_earlier_one() -> None:
    """A, B(fd), C are queued before the relay reads: the kernel hands A+B to one recvmsg
    with B's fd; the reader at the far end must still get the fd with B, not A."""
    fe_end, px_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    px_b, be_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a = wire.pack(wire.SET_VRING_NUM, 1, struct.pack("=II", 0, 256))
    b = wire.pack(wire.SET_VRING_KICK, 1, wire.U64.pack(0))
    c = wire.pack(wire.SET_VRING_ENABLE, 1, struct.pack("=II", 0, 1))
    efd = wire.eventfd()
    wire.send_raw(fe_end, a)
    wire.send_raw(fe_end, b, [efd])
    wire.send_raw(fe_end, c)
    # Prove the glue happens (TECH.md §5) on a copy of the stream before testing the relay.
    g1, g2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    wire.send_raw(g1, a)
    wire.send_raw(g1, b, [efd])
    data, anc, _, _ = g2.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
    assert len(data) == len(a) + len(b) and anc
    for fd in struct.unpack(f"{len(anc[0][2]) // 4}i", anc[0][2]):
        os.close(fd)
    g1.close()
    g2.close()

    owner = _Owner()
    link = Link(owner, "main", (px_a, px_b), ("frontend", "backend"))
    link.start()
    got = [wire.recv_msg(be_end) for _ in range(3)]
    assert [m.raw for m in got] == [a, b, c]
    assert [len(m.fds) for m in got] == [0, 1, 0]
    assert got[1].inodes == [wire.fd_inode(efd)]
    for m in got:
        m.close_fds()
    os.close(efd)
    fe_end.close()
    assert wire.recv_msg(be_end) is None  # EOF passed on
    be_end.close()
    assert owner.done.wait(5)
    assert [f.fds for f in owner.frames if f.kind == "data"] == [(), ("eventfd",), ()]


def test_random_stream_arrives_message_for_message(sockdir, proxy) -> None:
    """Random sizes (up to 64 KiB), random fds, random write splits and bursts: the far end
    reads exactly the messages that were written, each with exactly its own fds."""
    import random

    rng = random.Random(1234)
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    plan = []
    for i in range(300):
        size = rng.choice([0, 8, 40, 100, 2048, 4096, 20000, 65536])
        payload = rng.randbytes(size)
        nfds = rng.choice([0, 0, 0, 1, 2, 8])
        plan.append((wire.pack(100 + i % 50, 1, payload), nfds))
    received: list = []

    def read_all() -> None:
        for _ in plan:
            received.append(wire.recv_msg(be))

    reader = threading.Thread(target=read_all)
    reader.start()
    sent_inodes = []
    for data, nfds in plan:
        fds = [wire.eventfd() if k % 2 else wire.memfd(f"m{k}", 4096) for k in range(nfds)]
        sent_inodes.append([wire.fd_inode(fd) for fd in fds])
        cuts = sorted(rng.sample(range(1, len(data)), k=min(rng.randint(0, 4), len(data) - 1)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        wire.send_raw(fe, pieces[0], fds)
        for piece in pieces[1:]:
            fe.sendall(piece)
        for fd in fds:
            os.close(fd)
    reader.join(30)
    assert [m.raw for m in received] == [data for data, _ in plan]
    assert [m.inodes for m in received] == sent_inodes
    for m in received:
        m.close_fds()
    fe.close()
    be.close()
    srv.stop()
    assert [f.data for f in rec.data()] == [data for data, _ in plan]  # one frame per message
    assert not rec.events("note")


def test_a_stop_forwards_what_was_already_sent() -> None:
    """Messages written before the proxy stops reach the other side (and the capture),
    then the other side sees EOF: a stop never swallows a message on its way."""
    fe_end, px_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    px_b, be_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a = wire.pack(wire.SET_VRING_NUM, 1, struct.pack("=II", 0, 256))
    b = wire.pack(wire.SET_VRING_ENABLE, 1, struct.pack("=II", 0, 1))
    efd = wire.eventfd()
    wire.send_raw(fe_end, a, [efd])
    wire.send_raw(fe_end, b)
    owner = _Owner()
    link = Link(owner, "main", (px_a, px_b), ("frontend", "backend"))
    link.abort()  # the stop comes before the relay has read anything
    link.start()
    got = [wire.recv_msg(be_end) for _ in range(2)]
    assert [m.raw for m in got] == [a, b]
    assert got[0].inodes == [wire.fd_inode(efd)]
    for m in got:
        m.close_fds()
    assert wire.recv_msg(be_end) is None
    assert owner.done.wait(5)
    assert owner.info["reason"] == "proxy stopped"
    assert [f.data for f in owner.frames if f.kind == "data"] == [a, b]
    os.close(efd)
    for s in (fe_end, be_end):
        s.close()
