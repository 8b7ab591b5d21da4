"""One thread relays both directions of a pair: a full socket must never stall the other way.

The relay sends with MSG_DONTWAIT and keeps what does not fit in a backlog; these
tests fill one direction (the reader does not read) and check that the other
direction keeps flowing, that back-pressure reaches the sender, and that
everything, EOF included, arrives in order once the reader reads again.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from vuinspect.testing import wire

from .conftest import relayed_pair, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_full_direction_does_not_stall_the_other(sockdir, proxy) -> None:
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    big = [wire.pack(200 + i % 7, 1, bytes([i % 251]) * 4096) for i in range(400)]  # ~1.6 MB
    sent_f2b: list[bytes] = []

    def flood() -> None:
        for m in big:
            fe.sendall(m)  # blocks once the proxy stops reading: back-pressure
            sent_f2b.append(m)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    # The back-end reads nothing yet; the proxy's send to it fills up and it stops reading.
    wait_until(lambda: not flooder.is_alive() or len(sent_f2b) > 10, what="some sent")
    wait_until(lambda: srv.stats()["frames_forwarded"] > 0, what="forwarding")
    # Meanwhile the back-end talks to the front-end: all of it must arrive.
    replies = [wire.pack(300 + i, 5, wire.U64.pack(i)) for i in range(200)]
    for m in replies:
        be.sendall(m)
    got_b2f = [wire.recv_msg(fe) for _ in replies]
    assert [m.raw for m in got_b2f] == replies
    assert flooder.is_alive(), "the flood should be held back while the back-end does not read"
    # Now the back-end reads: every f2b message arrives whole and in order.
    got_f2b = [wire.recv_msg(be) for _ in big]
    flooder.join(10)
    assert [m.raw for m in got_f2b] == big
    fe.shutdown(socket.SHUT_WR)
    assert wire.recv_msg(be) is None  # the EOF comes after the backlog, not before
    fe.close()
    be.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="close frame")
    data = rec.data()
    assert [f.data for f in data if f.direction == "f2b"] == big
    assert [f.data for f in data if f.direction == "b2f"] == replies


def test_eof_waits_for_the_backlog(sockdir, proxy) -> None:
    """The sender closes while its bytes still sit in the proxy: they arrive, then EOF."""
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    msgs = [wire.pack(100, 1, os.urandom(60000)) for _ in range(20)]
    done = threading.Event()

    def send_and_close() -> None:
        for m in msgs:
            fe.sendall(m)
        fe.close()
        done.set()

    t = threading.Thread(target=send_and_close, daemon=True)
    t.start()
    wait_until(lambda: srv.stats()["frames_forwarded"] >= 1, what="forwarding")
    got = []
    while True:
        m = wire.recv_msg(be)
        if m is None:
            break
        got.append(m.raw)
    assert got == msgs
    assert done.wait(10)
    be.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="close frame")
    (closed,) = rec.events("close")
    assert closed["by"] == "frontend" and closed["reason"] == "frontend closed the connection"


def test_fds_wait_in_the_backlog_with_their_message(sockdir, proxy) -> None:
    """A message with fds that does not fit yet keeps its fds until it is sent."""
    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    filler = [wire.pack(100, 1, b"\0" * 60000) for _ in range(10)]
    efd = wire.eventfd()
    kick = wire.pack(wire.SET_VRING_KICK, 1, wire.U64.pack(0))

    def send() -> None:
        for m in filler:
            fe.sendall(m)
        wire.send_raw(fe, kick, [efd])

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait_until(lambda: len(rec.data()) >= 3, what="the first messages through")
    got = [wire.recv_msg(be) for _ in range(len(filler) + 1)]
    sender.join(10)
    assert [m.raw for m in got] == [*filler, kick]
    assert [len(m.fds) for m in got] == [0] * len(filler) + [1]
    assert got[-1].inodes == [wire.fd_inode(efd)]
    for m in got:
        m.close_fds()
    os.close(efd)
    fe.close()
    be.close()
    wait_until(lambda: srv.active_links == 0, what="link to end")


def test_sender_gone_while_paused_no_busy_loop_and_all_arrives(sockdir, proxy) -> None:
    """The front-end writes more than fits and closes while the proxy is not reading it
    (its backlog towards the back-end is full): the proxy must wait quietly, not spin on the
    hang-up, and still deliver everything, then the close."""
    import time

    fe, be, srv, rec = relayed_pair(sockdir, proxy)
    # More than the socket towards the back-end takes, less than both sockets and the
    # proxy's backlog together: the front-end can finish writing and close while paused.
    msgs = [wire.pack(100, 1, bytes([i]) * 60000) for i in range(6)]
    fe.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # (capped at 2 x wmem_max)

    def send_and_close() -> None:
        for m in msgs:
            fe.sendall(m)
        fe.close()

    t = threading.Thread(target=send_and_close, daemon=True)
    t.start()
    wait_until(lambda: len(rec.data()) >= 2, what="forwarding to start")
    t.join(5)
    assert not t.is_alive(), "the front-end could not finish writing"
    assert len(rec.data()) < len(msgs), "the proxy should still hold some back"
    # The back-end does not read for a while: the proxy holds a backlog, the front-end is gone.
    cpu0 = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu0 < 0.3, "the proxy spins while it waits"
    got = []
    while (m := wire.recv_msg(be)) is not None:
        got.append(m.raw)
    t.join(10)
    assert got == msgs
    be.close()
    wait_until(lambda: len(rec.events("close")) == 1, what="close frame")


def test_the_frame_queue_is_bounded_in_bytes_not_only_in_count() -> None:
    """A callable consumer that falls behind holds at most ~budget bytes (was: 65 536
    frames whatever their size, 4 GiB of 64 KiB messages); what is dropped is noted."""
    import time

    from vuinspect.frames import event_frame, event_info
    from vuinspect.proxy.queue import FrameQueue

    release = threading.Event()
    seen = []

    def stuck(frame) -> None:  # the consumer is stuck until released
        release.wait(10)
        seen.append(frame)

    q = FrameQueue(stuck, budget=1 << 20)
    q.start()
    q.event(event_frame("open", 1, 7, {"label": "x"}))
    time.sleep(0.05)  # the consumer took the open frame and is stuck on it
    big = wire.pack(7, 1, b"b" * 60000)
    record = q.lane(7, "main", "f2b")
    for i in range(100):  # 6 MB offered
        record(100 + i, big)
    kept = 100 - q.dropped
    assert 10 <= kept <= 20  # ~1 MiB
    assert q.backlog() == kept
    q.event(event_frame("close", 999, 7, {"reason": "end"}))
    release.set()
    q.close(5)
    data = [f for f in seen if f.kind == "data"]
    notes = [event_info(f) for f in seen if f.kind == "note"]
    assert len(data) == kept and sum(n["dropped"] for n in notes) == q.dropped
    assert [f.kind for f in seen][-2:] == ["note", "close"]  # the note before the close
