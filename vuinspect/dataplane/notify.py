"""``--trace-notify``: kicks, calls and errs relayed through eventfds of the proxy, and counted.

For each SET_VRING_KICK/CALL/ERR with an fd, the relay hook (``tap``, called on
the forwarding thread before the message is sent) gives the back-end an
eventfd of ours instead and keeps the front-end's: a kick is read from the
front-end's fd and written to ours (the back-end reads it), a call or err is
read from ours (the back-end writes it) and written to the front-end's.  The
counter value read is the value written, so nothing is lost or added.  One
thread polls every relayed fd; counts are aggregated per vring and signal in
``WINDOW_NS`` windows and emitted as ``notify`` frames (count, first, last), so a
busy ring cannot flood the capture.  ``NOFD`` messages (bit 8) pass untouched.
The fds stay relayed until the connection closes or the proxy stops.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..frames import Frame, notify_frame
from ..protocol.layouts import VRING_FD_BITS

WINDOW_NS = 10_000_000
#: Relayed fds at most (3 per vring); beyond, messages pass with their own fds.
MAX_RELAYS = 3 * 1024
#: A vhost_vring_fd payload's bits (protocol/layouts.py): NOFD, and the vring index.
NOFD = dict(VRING_FD_BITS)["nofd"]
VRING_INDEX = dict(VRING_FD_BITS)["index"]
SIGNALS = {12: "kick", 13: "call", 14: "err"}
_MSG = struct.Struct("<IIIQ")  # header + u64 payload


@dataclass(slots=True)
class _Relay:
    conn: int
    vring: int
    signal: str
    src: int  # the fd we read
    dst: int  # the fd we write
    ours: int  # the eventfd we made (src or dst)
    theirs: int  # the front-end's


@dataclass(slots=True)
class _Window:
    count: int
    first: int
    last: int


class Notifier:
    """Relays and counts notifications; see the module doc."""

    def __init__(
        self, emit: Callable[[Frame], None], clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.emit = emit
        self.clock = clock
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._by_fd: dict[int, _Relay] = {}
        self._by_slot: dict[tuple[int, str, int], _Relay] = {}
        self._windows: dict[tuple[int, int, str], _Window] = {}  # (notifier thread only)
        self._closing: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.relayed = 0
        self.errors = 0

    # -- the forwarding thread: the relay hook -----------------------------------------------
    def tap(self, conn: int, data: bytes, fds: list[int]) -> list[int] | None:
        """Replacement fds for a SET_VRING_KICK/CALL/ERR (None: send the message's own).

        The caller sends and closes the returned fds; the front-end's fd is now ours.
        """
        if len(fds) != 1 or len(data) < _MSG.size:
            return None
        req, _, _, u64 = _MSG.unpack_from(data)
        signal = SIGNALS.get(req)
        if signal is None or u64 & NOFD:
            return None
        vring = u64 & VRING_INDEX
        with self._lock:
            if len(self._by_fd) >= MAX_RELAYS and (conn, signal, vring) not in self._by_slot:
                return None
        try:
            ours = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            return None
        try:
            give = os.dup(ours)
        except OSError:
            os.close(ours)
            return None
        theirs = fds[0]
        src, dst = (theirs, ours) if signal == "kick" else (ours, theirs)
        relay = _Relay(conn, vring, signal, src, dst, ours, theirs)
        with self._lock:
            old = self._by_slot.pop((conn, signal, vring), None)
            if old is not None:
                self._drop(old)
            try:
                self._ep.register(src, select.EPOLLIN)
            except OSError:
                os.close(ours)
                os.close(give)
                return None
            self._by_fd[src] = relay
            self._by_slot[(conn, signal, vring)] = relay
        return [give]

    def closed(self, conn: int) -> None:
        """The connection ended: its relays stop (on the notifier thread, windows first)."""
        with self._lock:
            self._closing.add(conn)

    def _close_conns(self) -> None:  # (the notifier thread, or stop() after it)
        with self._lock:
            conns, self._closing = self._closing, set()
        for conn in conns:
            self._flush(conn=conn)
            with self._lock:
                for key in [k for k in self._by_slot if k[0] == conn]:
                    self._drop(self._by_slot.pop(key))

    def _drop(self, relay: _Relay) -> None:  # (lock held)
        self._by_fd.pop(relay.src, None)
        with contextlib.suppress(OSError, ValueError):
            self._ep.unregister(relay.src)
        for fd in (relay.ours, relay.theirs):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the notifier thread ----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vuinspect-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is not None and self._thread.is_alive():
            return  # (stuck: its fds are left to the process exit rather than raced)
        self._close_conns()
        self._flush()
        with self._lock:
            for relay in list(self._by_slot.values()):
                self._drop(relay)
            self._by_slot.clear()
        with contextlib.suppress(OSError):
            self._ep.close()

    def _run(self) -> None:
        poll = self._ep.poll
        while not self._stop.is_set():
            try:
                events = poll(WINDOW_NS / 1e9)
            except OSError:
                break
            now = self.clock()
            for fd, _ in events:
                with self._lock:
                    relay = self._by_fd.get(fd)
                    if relay is None:
                        continue
                    try:
                        n = os.eventfd_read(relay.src)
                    except BlockingIOError:
                        continue
                    except OSError:
                        self.errors += 1
                        continue
                    try:
                        os.eventfd_write(relay.dst, n)
                    except OSError:
                        self.errors += 1
                self.relayed += 1
                self._count(relay, n, now)
            self._flush(before=now - WINDOW_NS)
            if self._closing:
                self._close_conns()

    def _count(self, relay: _Relay, n: int, now: int) -> None:
        key = (relay.conn, relay.vring, relay.signal)
        w = self._windows.get(key)
        if w is None:
            self._windows[key] = _Window(n, now, now)
        else:
            w.count += n
            w.last = now

    def _flush(self, before: int | None = None, conn: int | None = None) -> None:
        """Emit the windows that began before ``before`` (all if None), of ``conn`` or all."""
        for key in list(self._windows):
            w = self._windows.get(key)
            if (
                w is None
                or (conn is not None and key[0] != conn)
                or (before is not None and w.first > before)
            ):
                continue
            del self._windows[key]
            self.emit(notify_frame(w.last, key[0], key[1], key[2], w.count, w.first, w.last))
