"""Front-ends flooding memory messages with fds faster than the ring sampler's tick.

The proxy (-q -w, so its ring sampler runs) is started with the usual soft limit of
1 024 fds, so the sampler's budget is 512 (dataplane/sampler_fds.py).  Several
connections each send memory messages with memfds as fast as they can, with a vring
message now and then (the sampler then maps what it held back).  Checked: the proxy's
open fds never pass the budget plus a fixed baseline (its own sockets and the fds of the
messages being forwarded); every message still reaches the back-end and a round trip
after the flood is answered; once the connections close the proxy holds what it held
before them.  Before the budget the sampler kept a dup of every fd sent between two ticks.
"""

from __future__ import annotations

import os
import resource
import struct
import threading
import time

import pytest

from vuinspect.capture import read_frames
from vuinspect.protocol.requests import FrontendRequest as FE
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.wire import Msg

from .conftest import Procs, fd_count, report, settle_fds, start_proxy, stop

FD_SOFT = 1024
BUDGET = FD_SOFT // 2  # sampler_fds.default_budget() under FD_SOFT
CONNECTIONS = 6
MESSAGES = 400
LOOK_EVERY = 64  # a SET_VRING_NUM: the sampler looks at the ring, mapping what it held back
#: What the proxy may hold besides the sampler's budget: a front-end and a back-end socket
#: a connection, the 8 fds of a message being forwarded (a link holds at most one
#: message's), and 8 more for a sampler mapping made before its dups are closed.
PER_CONNECTION = 2 + 8
SLACK = 8 + 8


def _limit_fds() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_SOFT, hard), hard))


def table(size: int) -> bytes:
    """SET_MEM_TABLE with 8 regions of ``size`` bytes (one memfd each)."""
    return struct.pack("=II", 8, 0) + b"".join(
        struct.pack("=QQQQ", i * size, size, 0x7F0000000000 + i * size, 0) for i in range(8)
    )


def add_region(i: int) -> bytes:
    """ADD_MEM_REG of the ``i``-th 4 KiB region (one fd)."""
    return struct.pack("=QQQQQ", 0, i * 4096, 4096, 0x7F0000000000 + i * 4096, 0)


def flood(
    px: str, kind: str, ident: int, out: dict[int, tuple[int, Msg | None] | Exception]
) -> None:
    """One hostile front-end: a handshake, MESSAGES memory messages without waiting, one
    round trip; ``out[ident]`` gets (writes sent, the reply) or the exception."""
    fe = None
    fds = [wire.memfd(f"flood{ident}-{i}", 1 << 16) for i in range(8)]
    try:
        fe = Frontend(wire.connect(px, retries=50))
        fe.handshake()
        for i in range(MESSAGES):
            if kind == "table":
                fe.send(wire.SET_MEM_TABLE, table(1 << 16), fds=fds)
            else:
                fe.send(FE.ADD_MEM_REG, add_region(i % 16), fds=fds[:1])
            if i % LOOK_EVERY == LOOK_EVERY - 1:
                fe.send(wire.SET_VRING_NUM, struct.pack("=II", 0, 256))
        reply = fe.call(wire.GET_FEATURES)  # forwarding goes on: the reply comes back
        out[ident] = (len(fe.sent), reply)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        out[ident] = exc
    finally:
        for fd in fds:
            os.close(fd)
        if fe is not None:
            fe.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["table", "add"])
def test_memory_fd_floods_stay_within_the_sampler_budget(
    sockdir: str, procs: Procs, kind: str
) -> None:
    """``table``: 8-memfd SET_MEM_TABLEs, each superseding the queued ones (no connection
    is given up); ``add``: 1-fd ADD_MEM_REGs, none superseding another, from 6 x 400 >
    the budget: connections are given up with a note, never their forwarding."""
    be_path = os.path.join(sockdir, "be.sock")
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "flood.pcapng")
    proxy = start_proxy(procs, px, be_path, "-w", cap, preexec_fn=_limit_fds)
    pool = BackendServer(be_path, backend_requests=2, notifier_fd=True)
    try:
        fds0 = fd_count(proxy.pid)
        bound = fds0 + BUDGET + CONNECTIONS * PER_CONNECTION + SLACK
        out: dict[int, tuple[int, Msg | None] | Exception] = {}
        threads = [
            threading.Thread(target=flood, args=(px, kind, i, out), daemon=True)
            for i in range(CONNECTIONS)
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads) and time.monotonic() - t0 < 40:
            peak = max(peak, fd_count(proxy.pid))
            time.sleep(0.002)
        for t in threads:
            t.join(10)
        elapsed = time.monotonic() - t0
        assert peak <= bound, (peak, bound)
        done = [v for v in out.values() if not isinstance(v, Exception)]
        assert len(done) == CONNECTIONS, [v for v in out.values() if v not in done][:3]
        for _, reply in done:
            assert reply is not None and reply.request == wire.GET_FEATURES
        for t in pool.threads:
            t.join(10)
        assert sorted(len(be.received) for be in pool.backends) == sorted(n for n, _ in done)
        after = settle_fds(proxy.pid, fds0)
        assert after == fds0
    finally:
        assert stop(proxy) == 0
        pool.close()
    notes = [f.data for f in read_frames(cap) if f.kind == "note"]
    given_up = [n for n in notes if b"fd budget" in n]
    if kind == "table":  # one table a connection at most: far from the budget
        assert not given_up, notes[:3]
    else:
        assert given_up and all(b"no longer sampled" in n for n in given_up), notes[:5]
    report(
        "sampler_fds",
        kind=kind,
        connections=CONNECTIONS,
        messages_per_connection=MESSAGES,
        budget=BUDGET,
        proxy_fds_before=fds0,
        proxy_fds_peak=peak,
        proxy_fds_bound=bound,
        proxy_fds_after=after,
        connections_given_up=len(given_up),
        seconds=round(elapsed, 1),
    )
