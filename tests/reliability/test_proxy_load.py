"""Proxy under load: 64 concurrent connections, thousands of messages and fds each.

``vuinspect proxy`` runs as its own process (so its fd count and memory can be
read from /proc), once with -q (one process) and once printing summary lines
(one process forwards, another decodes for display); the in-repo front-ends
and back-ends run as threads here.
Every connection mixes round trips, messages carrying memfds, several
messages glued into one write and back-end channel requests with an fd.
Checked per connection: the back-end received exactly the bytes the
front-end sent, message by message, each with the same fds (same st_dev and
st_ino, delivered by one read); the replies came back the same way; the
back-end channel carried its requests, fds and acks; and the capture holds
every byte of every stream of every connection.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from vuinspect.capture import CaptureReader
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer
from vuinspect.testing.frontend import Frontend

from .conftest import (
    fd_count,
    forwarding_pid,
    report,
    rss_kib,
    scaled,
    settle_fds,
    start_proxy,
    stop,
)

CONNECTIONS = 64
MESSAGES = scaled(300, 3000)


def split_messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        size = struct.unpack_from("=I", data, 8)[0]
        out.append(data[: 12 + size])
        data = data[12 + size :]
    return out


def drive(fe: Frontend, ident: int, n: int) -> int:
    """A QEMU-like start, then ``n`` messages of four kinds, then a stop.

    Returns the index in ``fe.sent`` where the messages with memfds start (the
    handshake's eventfds all share one anonymous inode).
    """
    fe.handshake(backend_channel=True)
    start = len(fe.sent)
    for i in range(n):
        kind = i % 4
        if kind == 0:  # an fd-carrying message with no reply
            fd = wire.memfd(f"c{ident}-{i}", 4096)
            try:
                fe.send(wire.SET_VRING_CALL, wire.U64.pack(0), fds=[fd])
            finally:
                os.close(fd)
        elif kind == 1:  # a round trip
            fe.call(wire.GET_FEATURES)
        elif kind == 2:  # three messages in one write, naming the connection
            fe.send_raw(
                wire.pack(wire.SET_VRING_NUM, payload=struct.pack("=II", ident, i))
                + wire.pack(wire.SET_VRING_BASE, payload=struct.pack("=II", 0, i))
                + wire.pack(wire.SET_VRING_ENABLE, payload=struct.pack("=II", 0, 1))
            )
        else:  # two memory regions, two fds, and an ack
            fe.set_mem_table(regions=2, region_size=1 << 16)
    fe.stop_queues()
    return start


@pytest.mark.timeout(scaled(600, 3600))
@pytest.mark.parametrize("mode", ["quiet", "viewer"])
def test_64_connections_lose_nothing(sockdir, procs, mode) -> None:
    """``quiet``: -q, one process; ``viewer``: summary lines decoded in a second process while
    the other forwards and captures; fds and memory are read from the forwarding one."""
    be_path = os.path.join(sockdir, "be.sock")
    px_path = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "load.pcapng")
    # each back-end sends two config changes and a host notifier with an fd on its channel
    pool = BackendServer(be_path, backend_requests=2, notifier_fd=True)
    proxy = start_proxy(procs, px_path, be_path, "-w", cap, quiet=mode == "quiet")
    time.sleep(0.2)
    engine = forwarding_pid(proxy.pid, px_path)
    fds0, rss0 = fd_count(engine), rss_kib(engine)
    frontends: list[Frontend] = []
    memfd_start: dict[int, int] = {}
    errors: list[BaseException] = []
    peak = {"fds": 0, "rss": 0, "held": 0}
    active = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(CONNECTIONS)

    def client(ident: int) -> None:
        try:
            fe = Frontend(wire.connect(px_path, retries=50))
            frontends.append(fe)
            with lock:
                active[0] += 1
            barrier.wait(60)  # all connections open before any traffic
            memfd_start[id(fe)] = drive(fe, ident, MESSAGES)
            time.sleep(0.3)  # let the back-end channel exchange finish
        except BaseException as exc:  # noqa: BLE001 - reported below with its connection
            errors.append(exc)
        finally:
            with lock:
                peak["held"] = max(peak["held"], active[0])
                active[0] -= 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak["fds"] = max(peak["fds"], fd_count(engine))
        peak["rss"] = max(peak["rss"], rss_kib(engine))
        time.sleep(0.05)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert not errors, errors[:3]
    for fe in frontends:
        fe.close()
    for t in pool.threads:
        t.join(10)
    fds_after = settle_fds(engine, fds0)
    rss_after = rss_kib(engine)
    assert stop(proxy) == 0
    pool.close()

    # -- the traffic: every byte and fd, in order, once -------------------------------------
    assert len(pool.backends) == CONNECTIONS
    by_stream = {b"".join(d for d, _ in fe.sent): fe for fe in frontends}
    assert len(by_stream) == CONNECTIONS  # each connection's stream names it
    sent_inodes: list[tuple[int, int]] = []
    fds_checked = 0
    pairs = []
    for be in pool.backends:
        assert be.error is None, be.error
        got = b"".join(m.raw for m in be.received)
        fe = by_stream.get(got)
        assert fe is not None, f"a back-end received a stream no front-end sent ({len(got)} bytes)"
        pairs.append((fe, be))
        want = []
        for data, inodes in fe.sent:
            msgs = split_messages(data)
            want += [(m, []) for m in msgs[:-1]] + [(msgs[-1], inodes)]
        got_msgs = [(m.raw, m.inodes) for m in be.received]
        for (raw, inodes), (wraw, winodes) in zip(got_msgs, want, strict=True):
            assert raw == wraw
            if struct.unpack_from("=I", raw)[0] == wire.SET_BACKEND_REQ_FD:
                assert len(inodes) == len(winodes) == 1  # swapped for the proxy's socket pair
            else:
                assert inodes == winodes
        assert all(m.fd_reads <= 1 for m in be.received)
        fds_checked += sum(len(m.inodes) for m in be.received)
        sent_inodes += [i for _, inodes in fe.sent[memfd_start[id(fe)] :] for i in inodes]
        assert [m.raw for m in fe.received] == be.sent
        # back-end channel: requests (one with a memfd) and the front-end's acks
        assert [m.inodes for m in fe.channel_received] == be.channel_sent_inodes
        assert [m.raw for m in be.channel_replies] == fe.channel_sent
        fds_checked += sum(len(m.inodes) for m in fe.channel_received)
    assert len(set(sent_inodes)) == len(sent_inodes)  # fd identity is unambiguous

    # -- the capture: every stream of every connection, complete ------------------------------
    reader = CaptureReader(cap)
    streams: dict[tuple[int, str, str], list[bytes]] = {}
    fd_descs: dict[int, int] = {}
    notes = []
    for f in reader:
        if f.kind == "data":
            streams.setdefault((f.conn, f.channel, f.direction), []).append(f.data)
            fd_descs[f.conn] = fd_descs.get(f.conn, 0) + len(f.fds)
        elif f.kind == "note":
            notes.append(f.data)
    assert reader.error is None, reader.error
    conns = {c for c, _, _ in streams}
    assert len(conns) == CONNECTIONS, notes[:3]
    captured = {b"".join(streams[(c, "main", "f2b")]): c for c in conns}
    for fe, be in pairs:
        c = captured[b"".join(d for d, _ in fe.sent)]
        assert b"".join(streams[(c, "main", "b2f")]) == b"".join(be.sent)
        assert b"".join(streams[(c, "backend", "b2f")]) == b"".join(
            m.raw for m in fe.channel_received
        )
        assert b"".join(streams[(c, "backend", "f2b")]) == b"".join(fe.channel_sent)
        want_fds = sum(len(i) for _, i in fe.sent) + sum(len(m.inodes) for m in fe.channel_received)
        assert fd_descs[c] == want_fds
    assert not notes, notes[:3]  # nothing was dropped from the capture
    assert fds_after == fds0
    messages = sum(len(be.received) + len(be.sent) for _, be in pairs)
    assert peak["held"] == CONNECTIONS  # all of them were open at the same time
    report(
        "proxy_load",
        mode=mode,
        connections=CONNECTIONS,
        connections_held_at_once=peak["held"],
        messages_per_connection=MESSAGES,
        messages_relayed=messages,
        fds_checked=fds_checked,
        seconds=round(elapsed, 1),
        proxy_fds_before=fds0,
        proxy_fds_peak=peak["fds"],
        proxy_fds_after=fds_after,
        proxy_rss_kib_before=rss0,
        proxy_rss_kib_peak=peak["rss"],
        proxy_rss_kib_after=rss_after,
        capture_frames=reader.frames_read,
    )
