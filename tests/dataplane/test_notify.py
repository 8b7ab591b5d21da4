"""--trace-notify's relay: each signal passes with its counter value, counted per window."""

from __future__ import annotations

import contextlib
import json
import os
import select
import time

from vuinspect.dataplane.notify import Notifier
from vuinspect.encode import build


def anon_fds() -> int:
    """eventfds and epoll fds of this process (what the notifier makes and must close)."""
    n = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{name}").startswith("anon_inode:")
    return n


def read_when_ready(fd: int, timeout: float = 2.0) -> int:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "nothing relayed"
    return os.eventfd_read(fd)


def test_kick_and_call_relayed_and_counted() -> None:
    before = anon_fds()
    frames = []
    n = Notifier(frames.append)
    n.start()
    kick_fe = os.eventfd(0, os.EFD_NONBLOCK)
    call_fe = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        # the copies the proxy received (the front-end keeps kick_fe and call_fe)
        give_kick = n.tap(1, build("main", 12, {"value": 2}), [os.dup(kick_fe)])
        give_call = n.tap(1, build("main", 13, {"value": 2}), [os.dup(call_fe)])
        assert n.tap(1, build("main", 12, {"value": 2 | 1 << 8}), [kick_fe]) is None  # NOFD
        assert give_kick and give_call and give_kick[0] not in (kick_fe, call_fe)
        be_kick, be_call = give_kick[0], give_call[0]  # (the relay would send these)
        os.eventfd_write(kick_fe, 3)  # the front-end kicks (3 coalesced)
        assert read_when_ready(be_kick) == 3  # the back-end sees exactly that
        os.eventfd_write(be_call, 2)  # the back-end calls
        assert read_when_ready(call_fe) == 2
        time.sleep(0.05)
    finally:
        n.stop()
        for fd in (be_kick, be_call, call_fe, kick_fe):
            os.close(fd)
    got = {(r["signal"], r["vring"]): r for r in (json.loads(f.data) for f in frames)}
    assert got[("kick", 2)]["count"] == 3 and got[("call", 2)]["count"] == 2
    assert all(f.kind == "notify" and f.conn == 1 for f in frames)
    assert anon_fds() == before  # what the notifier took or made, it closed


def test_connection_close_drops_its_relays() -> None:
    frames = []
    n = Notifier(frames.append)
    n.start()
    fe = os.eventfd(0, os.EFD_NONBLOCK)
    (give,) = n.tap(7, build("main", 12, {"value": 0}), [fe])
    os.close(give)
    n.closed(7)
    deadline = time.monotonic() + 2
    while n._by_fd and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not n._by_fd
    n.stop()
