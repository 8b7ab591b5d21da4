"""Connections: orientation, many at once, ends, malformed bytes, leaks, slow consumers."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from vuinspect.proxy.fds import open_fd_count
from vuinspect.proxy.server import REPLACED, Route
from vuinspect.testing import wire
from vuinspect.testing.backend import Backend
from vuinspect.testing.frontend import Frontend

from .conftest import relayed_pair, stop_when_idle, wait_until

pytestmark = pytest.mark.timeout(60)


def _accept_in_thread(listener: socket.socket) -> tuple[list[socket.socket], threading.Thread]:
    got: list[socket.socket] = []
    t = threading.Thread(target=lambda: got.append(listener.accept()[0]), daemon=True)
    t.start()
    return got, t


def _routed(sockdir: str, proxy, **route: object):
    """A listening back-end socket and a proxy in front of it (``route`` to Route):
    (listener, proxy path, server, recorder)."""
    be_path = os.path.join(sockdir, "be.sock")
    px = os.path.join(sockdir, "px.sock")
    listener = wire.listen(be_path)
    srv, rec = proxy([Route(px, be_path, **route)])
    return listener, px, srv, rec


def _connect_through(listener: socket.socket, px: str) -> tuple[socket.socket, socket.socket]:
    """A connection to the proxy at ``px`` and the back-end end it made at ``listener``."""
    got, t = _accept_in_thread(listener)
    fe = wire.connect(px)
    t.join(5)
    return fe, got[0]


@pytest.mark.parametrize("frontend", ["auto", "connect"])
def test_qemu_as_server_backend_connects(sockdir, proxy, frontend) -> None:
    """QEMU listens (server=on), the back-end connects to the proxy (dpdk client=1)."""
    qemu_path = os.path.join(sockdir, "qemu.sock")
    px = os.path.join(sockdir, "px.sock")
    qemu_listener = wire.listen(qemu_path)
    srv, rec = proxy([Route(px, qemu_path, frontend=frontend)])
    got, t = _accept_in_thread(qemu_listener)
    be = Backend(wire.connect(px))
    bt = threading.Thread(target=be.serve, daemon=True)
    bt.start()
    t.join(5)
    fe = Frontend(got[0])
    fe.handshake()
    fe.close()
    bt.join(5)
    qemu_listener.close()
    stop_when_idle(srv)
    (opened,) = rec.events("open")
    assert opened["orientation"] == "backend-connects"
    assert opened["label"] == qemu_path
    assert "orientation_guessed" not in opened
    first = rec.data()[0]
    assert first.direction == "f2b" and struct.unpack_from("=I", first.data)[0] == wire.GET_FEATURES
    assert {f.direction for f in rec.data() if f.data[4] == 5} == {"b2f"}  # replies
    (closed,) = rec.events("close")
    assert closed["by"] == "frontend" and "closed the connection" in closed["reason"]


def test_auto_detects_frontend_connecting(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path, device="blk")])
    fe = Frontend(wire.connect(px))
    fe.handshake()
    fe.close()
    bsrv.join()
    stop_when_idle(srv)
    (opened,) = rec.events("open")
    assert opened["orientation"] == "frontend-connects"
    assert opened["device"] == "blk"
    assert opened["byteorder"] == os.sys.byteorder
    assert opened["listen"] == px and opened["connect"] == bsrv.path
    assert rec.frames[0].kind == "open" and rec.frames[-1].kind == "close"


def test_many_concurrent_connections(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    errors: list[BaseException] = []
    fes: list[Frontend] = []

    def one() -> None:
        try:
            fe = Frontend(wire.connect(px))
            fe.handshake(regions=2)
            fe.round_trips(200)
            fe.close()
            fes.append(fe)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    bsrv.join()
    stop_when_idle(srv)
    conns = [e["_conn"] for e in rec.events("open")]
    assert len(set(conns)) == 16
    for conn in conns:
        n = len(rec.data(conn))
        assert n == len(fes[0].sent) + len(fes[0].received)
    sent = sorted(b"".join(d for d, _ in fe.sent) for fe in fes)
    got = sorted(b"".join(m.raw for m in be.received) for be in bsrv.backends)
    assert sent == got


def test_peer_closes_mid_message(sockdir, proxy) -> None:
    listener, px, srv, rec = _routed(sockdir, proxy, frontend="listen")
    fe, be = _connect_through(listener, px)
    full = wire.pack(wire.SET_MEM_TABLE, 1, b"\x01" * 40)
    fe.sendall(full[:30])
    fe.close()
    received = b""
    while chunk := be.recv(4096):
        received += chunk
    assert received == full[:30]  # forwarded as it was, then EOF
    be.close()
    listener.close()
    stop_when_idle(srv)
    (closed,) = rec.events("close")
    assert closed["by"] == "frontend"
    assert "mid-message" in closed["reason"] and "30 byte" in closed["reason"]
    notes = [n["text"] for n in rec.events("note")]
    assert any("closed mid-message" in n for n in notes)
    assert rec.data()[0].data == full[:30]


def test_malformed_bytes_forwarded_verbatim_and_flagged(sockdir, proxy) -> None:
    listener, px, srv, rec = _routed(sockdir, proxy)
    fe, be = _connect_through(listener, px)
    good = wire.pack(wire.GET_FEATURES)
    bad = struct.pack("=III", 1, 1, 0xFFFFFFF0) + b"garbage that is not a payload"
    tail = os.urandom(300)
    fe.sendall(good)
    time.sleep(0.05)
    fe.sendall(bad)
    time.sleep(0.05)
    fe.sendall(tail)
    fe.close()
    received = b""
    while chunk := be.recv(4096):
        received += chunk
    assert received == good + bad + tail
    be.close()
    listener.close()
    stop_when_idle(srv)
    notes = [n["text"] for n in rec.events("note")]
    assert len(notes) == 1 and "unframed" in notes[0] and str(0xFFFFFFF0) in notes[0]
    assert b"".join(f.data for f in rec.data()) == good + bad + tail


def test_reconnect_is_a_new_connection_and_fds_return_to_baseline(
    sockdir, backend_server, proxy
) -> None:
    bsrv = backend_server(backend_requests=1)
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    time.sleep(0.05)
    baseline = open_fd_count()
    for _ in range(3):
        fe = Frontend(wire.connect(px))
        fe.handshake(regions=2, backend_channel=True)
        wait_until(lambda: bsrv.backends[-1].channel_done.is_set(), what="back-end channel")
        fe.close()
        bsrv.join()
    wait_until(lambda: srv.active_links == 0, what="links to close")
    wait_until(lambda: open_fd_count() == baseline, what="fd count back to baseline")
    srv.stop()  # delivers every queued frame
    opens = [e["_conn"] for e in rec.events("open")]
    assert len(opens) == 3 and opens == sorted(opens) and len(set(opens)) == 3


def test_connect_failure_is_reported(sockdir, proxy) -> None:
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, os.path.join(sockdir, "nobody.sock"), connect_timeout=0)])
    time.sleep(0.05)
    baseline = open_fd_count()
    s = wire.connect(px)
    assert s.recv(1) == b""  # closed at once, like a refused connection
    s.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="close frame")
    wait_until(lambda: open_fd_count() == baseline, what="fd count back to baseline")
    assert srv.stats()["connect_failures"] == 1
    (closed,) = rec.events("close")
    assert closed["by"] == "proxy" and "could not connect" in closed["reason"]
    assert rec.frames[0].kind == "open"
    srv.stop()


def test_connection_waits_for_a_target_that_comes_up(sockdir, proxy) -> None:
    """The back-end starts after the client connected: relayed, nothing reported as failed."""
    px = os.path.join(sockdir, "px.sock")
    be_path = os.path.join(sockdir, "be.sock")
    srv, rec = proxy([Route(px, be_path, connect_timeout=5)])
    fe = wire.connect(px)
    fe.sendall(wire.pack(wire.GET_FEATURES))  # waits in the socket meanwhile
    time.sleep(0.3)
    listener = wire.listen(be_path)
    listener.settimeout(5)
    be, _ = listener.accept()
    be.settimeout(5)
    assert be.recv(100) == wire.pack(wire.GET_FEATURES)
    fe.close()
    be.close()
    listener.close()
    srv.stop()
    assert srv.stats()["connect_failures"] == 0
    assert not rec.events("note")


def test_connection_waits_at_most_connect_timeout(sockdir, proxy) -> None:
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, os.path.join(sockdir, "nobody.sock"), connect_timeout=0.4)])
    s = wire.connect(px)
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(1) == b""
    assert 0.35 < time.monotonic() - t0 < 2
    s.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="close frame")
    (closed,) = rec.events("close")
    assert "could not connect" in closed["reason"] and "waited" in closed["reason"]


def test_stop_ends_connections_waiting_for_their_target(sockdir, proxy) -> None:
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, os.path.join(sockdir, "nobody.sock"), connect_timeout=60)])
    waiting = [wire.connect(px) for _ in range(3)]
    wait_until(lambda: srv._waiting == 3, what="three connections waiting")
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.5
    for s in waiting:
        s.settimeout(5)
        assert s.recv(1) == b""
        s.close()
    assert srv.stats()["connect_failures"] == 3


def test_repeated_connect_failures_are_coalesced(sockdir, proxy) -> None:
    """Five failures: the first in full (open, close, a line), the other four as one note."""
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, os.path.join(sockdir, "nobody.sock"), connect_timeout=0)])
    lines: list[str] = []
    srv.on_error = lines.append
    for _ in range(5):
        s = wire.connect(px)
        s.settimeout(5)
        assert s.recv(1) == b""
        s.close()
    wait_until(lambda: srv.stats()["connect_failures"] == 5, what="five failures")
    srv.stop()
    assert len(rec.events("open")) == 1 and len(rec.events("close")) == 1
    (note,) = rec.events("note")
    assert note["text"].startswith("4 more connection(s)") and "could not connect" in note["text"]
    assert note["_conn"] == rec.events("open")[0]["_conn"]
    assert len(lines) == 2 and "4 more connection(s)" in lines[1], lines


def test_stop_closes_live_connections(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, bsrv.path)])
    fe = Frontend(wire.connect(px))
    fe.handshake()
    srv.stop()
    assert wire.recv_msg(fe.sock) is None  # the front-end sees EOF
    fe.close()
    (closed,) = rec.events("close")
    assert closed["by"] == "proxy" and closed["reason"] == "proxy stopped"
    assert not os.path.exists(px)  # listen socket removed


def test_slow_consumer_drops_from_capture_not_from_traffic(sockdir, backend_server, proxy) -> None:
    bsrv = backend_server()
    px = os.path.join(sockdir, "px.sock")
    seen = []

    def slow(frame) -> None:
        time.sleep(0.002)
        seen.append(frame)

    srv, _ = proxy([Route(px, bsrv.path)], sink=slow, queue_size=8)
    fe = Frontend(wire.connect(px))
    fe.round_trips(300)
    assert len(fe.received) == 300  # every request got its reply
    fe.close()
    bsrv.join()
    stop_when_idle(srv)
    dropped = srv.frames_dropped
    assert dropped > 0
    notes = [f for f in seen if f.kind == "note"]
    from vuinspect.frames import event_info

    assert sum(event_info(n)["dropped"] for n in notes) == dropped
    assert len([f for f in seen if f.kind == "data"]) == 600 - dropped
    assert seen[-1].kind == "close"


def _hup(sock: socket.socket, timeout_ms: int = 0) -> bool:
    """Does ``sock`` show POLLHUP within the timeout (what QEMU's chardev watches for)?"""
    import select

    p = select.poll()
    p.register(sock, 0)  # only POLLHUP/POLLERR wake us, not a readable EOF
    return any(ev & select.POLLHUP for _, ev in p.poll(timeout_ms))


def test_full_close_and_half_close_are_passed_on_as_they_happened(sockdir, proxy) -> None:
    """QEMU only notices a vanished back-end by POLLHUP: a full close must arrive as one."""
    listener, px, srv, rec = _routed(sockdir, proxy, frontend="listen")

    # 1. The back-end closes entirely: the front-end's socket hangs up.
    fe, be = _connect_through(listener, px)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert be.recv(100) == wire.pack(wire.GET_FEATURES)
    be.close()
    assert _hup(fe, 5000)
    fe.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="first close")
    assert rec.events("close")[0]["reason"] == "backend closed the connection"

    # 2. The front-end only shuts down writing: EOF but no hang-up, the other way still works.
    fe, be = _connect_through(listener, px)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert be.recv(100) == wire.pack(wire.GET_FEATURES)
    fe.shutdown(socket.SHUT_WR)
    assert be.recv(100) == b""
    assert not _hup(be, 200)
    be.sendall(wire.pack(wire.GET_FEATURES, 5, wire.U64.pack(1)))
    assert fe.recv(100) == wire.pack(wire.GET_FEATURES, 5, wire.U64.pack(1))
    fe.close()  # now the full close follows
    assert _hup(be, 5000)
    be.close()
    listener.close()
    wait_until(lambda: len(rec.events("close")) == 2, what="second close")
    assert rec.events("close")[1]["reason"] == "frontend shut down its sending side"
    assert rec.events("close")[1]["by"] == "frontend"


def test_a_new_backend_channel_ends_the_one_it_replaces(sockdir, proxy) -> None:
    """40 SET_BACKEND_REQ_FD on one connection to a back-end that keeps every socket: one
    relayed channel at a time (before: a thread and 2 fds each until the proxy's fd
    limit); the replaced ones end (their back-end end reads EOF), the last one relays."""
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    base = open_fd_count()
    ours, kept = [], []
    for _ in range(40):
        a, b = socket.socketpair()
        wire.send_raw(fe, wire.pack(wire.SET_BACKEND_REQ_FD), [b.fileno()])
        b.close()
        ours.append(a)
        msg = wire.recv_msg(be)
        assert msg is not None and len(msg.fds) == 1
        kept.append(socket.socket(fileno=msg.fds[0]))
    wait_until(lambda: srv.active_links == 2, what="the main link and one back-end channel")
    assert open_fd_count() <= base + 2 * 40 + 16  # (the test's own 80 ends, kept open)
    wait_until(lambda: len(rec.events("close")) >= 39, what="39 closes")
    replaced = [c for c in rec.events("close") if c["_channel"] == "backend"]
    assert len(replaced) == 39 and {c["reason"] for c in replaced} == {REPLACED}
    kept[0].settimeout(5)
    assert kept[0].recv(1) == b""  # an old channel: ended
    request = wire.pack(wire.SET_BACKEND_REQ_FD + 1000)  # any bytes: relayed as they are
    ours[-1].sendall(request)
    kept[-1].settimeout(5)
    assert kept[-1].recv(64) == request  # the newest channel relays
    for sock in (*ours, *kept, fe, be):
        sock.close()
