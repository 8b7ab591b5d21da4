"""The proxy server: listeners, one Connection per accepted socket, the frame queue.

Every accepted connection gets a fresh upstream connection and a process-wide
connection id, so a back-end restart or a QEMU reconnect is a new session.
Which peer is the front-end is known from the Route, or (``auto``) from who
sends the first byte: QEMU always speaks first.  A socket fd passed in
``SET_BACKEND_REQ_FD`` is swapped for one end of a socket pair of ours so the
back-end channel is relayed (and captured) too.

A missing ``connect`` target is waited for (``Route.connect_timeout``) before
the accepted connection is closed: closing at once made a client that
reconnects on close (dpdk-testpmd ``client=1``) loop thousands of times a
second.  Failures after the first of a series are coalesced into one log line
and one capture note with a count (failures.py).  Running out of fds on accept
backs off instead of spinning.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import selectors
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from vuinspect.frames import Frame, event_frame

from .failures import Failures
from .fds import describe_fd, open_fd_count
from .interpose import ORIG_SUFFIX, Interposer, Listener, ListenError
from .queue import FrameQueue
from .recorder import Recorder
from .relay import Link, Roles
from .sink import BUDGET, FrameSink

if TYPE_CHECKING:
    from vuinspect.rules import RuleSet

__all__ = ["ProxyServer", "Route", "ListenError", "open_fd_count"]

# Process-wide connection ids: a reconnect is always a new id, across routes.
_CONN_IDS = itertools.count(1)

FRONTEND_CHOICES = ("auto", "listen", "connect")
#: Seconds an accepted connection waits for a missing ``connect`` target (--connect-timeout).
DEFAULT_CONNECT_TIMEOUT = 3.0
#: How often a waiting connection tries the target again.
CONNECT_RETRY_S = 0.05
#: Connections waiting for their target at once; more are closed at once (and counted).
MAX_WAITING = 64
#: accept() out of fds (or memory): wait this long before trying again, instead of spinning.
ACCEPT_BACKOFF_S = 0.1
_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: The end reason of a back-end channel a new SET_BACKEND_REQ_FD replaced.
REPLACED = "replaced by a new back-end channel (SET_BACKEND_REQ_FD)"


@dataclass
class Route:
    """One listen path relayed to one connect path."""

    listen: str
    connect: str
    label: str | None = None
    frontend: Literal["auto", "listen", "connect"] = "auto"
    device: str | None = None
    #: Take over a live back-end socket at ``listen`` (``connect`` is then its moved-aside name).
    interpose: bool = False
    #: Seconds an accepted connection waits for a missing or refusing ``connect`` target.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        if self.frontend not in FRONTEND_CHOICES:
            raise ValueError(f"frontend must be one of {FRONTEND_CHOICES}, not {self.frontend!r}")
        if self.interpose and not self.connect:
            self.connect = self.listen + ORIG_SUFFIX
        if not self.connect_timeout >= 0:
            raise ValueError(f"connect_timeout must be >= 0, not {self.connect_timeout!r}")

    @classmethod
    def interposed(cls, path: str, **kw: Any) -> Route:
        return cls(listen=path, connect=path + ORIG_SUFFIX, interpose=True, **kw)

    @property
    def shown(self) -> str:
        """The label users see: the back-end/QEMU socket path they know."""
        if self.label:
            return self.label
        return self.listen if self.interpose else self.connect


def _roles_for(frontend: str) -> Roles | None:
    if frontend == "listen":
        return ("frontend", "backend")
    if frontend == "connect":
        return ("backend", "frontend")
    return None


class Connection:
    """One accepted connection: its main Link and any back-end channel Links."""

    def __init__(
        self, server: ProxyServer, route: Route, accepted: socket.socket, ts_ns: int
    ) -> None:
        self.server = server
        self.route = route
        self.conn = next(_CONN_IDS)
        self.accepted = accepted
        self.ts_ns = ts_ns
        self._lock = threading.Lock()
        self.opened = False
        self.links: list[Link] = []
        self.main: Link | None = None
        #: Where the links' frames go (LinkOwner.sink; None: nothing records).
        self.sink = server.sink
        #: The data plane's fd hook (read by relay.Link); None: no ring sampler.
        sampler = server.recorder.sampler if server.recorder is not None else None
        self.fd_tap = sampler.fd_tap if sampler is not None else None
        if self.sink is not None:
            self.emit = self.sink.event  # type: ignore[method-assign]  # (one call less per frame)

    def emit(self, frame: Frame) -> None:
        """This connection's own frames (open, close, notes): to the sink, if any."""
        if self.sink is not None:
            self.sink.event(frame)

    # -- LinkOwner -------------------------------------------------------------

    def orient(self, link: Link, side: int) -> Roles:
        """Auto orientation: the side that spoke first is the front-end."""
        with self._lock:
            if link.roles is None:
                link.roles = ("frontend", "backend") if side == 0 else ("backend", "frontend")
                self._open(link.roles, guessed=False)
            return link.roles

    def _open(self, roles: Roles, guessed: bool) -> None:
        """Emit the open frame (once); callers hold ``_lock`` or run before the threads."""
        if self.opened:
            return
        self.opened = True
        r = self.route
        info: dict[str, object] = {
            "label": r.shown,
            "listen": r.listen,
            "connect": r.connect,
            "orientation": "frontend-connects" if roles[0] == "frontend" else "backend-connects",
            "byteorder": sys.byteorder,
        }
        if r.device:
            info["device"] = r.device
        if guessed:
            info["orientation_guessed"] = True
        if r.interpose:
            info["interposed"] = True
        self.emit(event_frame("open", self.ts_ns, self.conn, info))

    def intercept(
        self, link: Link, data: bytes, fds: list[int]
    ) -> tuple[list[int], tuple[str, ...]]:
        """SET_BACKEND_REQ_FD: relay the back-end channel through a socket pair of ours.

        One relayed channel per connection: a new one ends the one it replaces, as
        libvhost-user and DPDK close the fd they replace (QEMU sets it up once per
        connection).  A back-end that kept every channel would otherwise hold a
        thread and two fds of ours per message, up to our fd limit.
        """
        descs = [describe_fd(fd) for fd in fds]
        for i, fd in enumerate(fds):
            try:
                is_sock = stat.S_ISSOCK(os.fstat(fd).st_mode)
            except OSError:
                continue
            if not is_sock:
                continue
            try:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError as exc:
                link._note(
                    time.time_ns(), f"back-end channel passed through uninspected: {exc.strerror}"
                )
                break
            original = socket.socket(fileno=fd)  # now owned by the back-end channel Link
            blink = Link(self, "backend", (original, ours), ("frontend", "backend"))
            with self._lock:
                replaced = [lk for lk in self.links if lk.channel == "backend"]
                self.links.append(blink)
            for old in replaced:
                old.abort(REPLACED)
            self.server._track(blink)
            blink.start()
            fds = list(fds)
            fds[i] = theirs.detach()  # sent to the back-end, then closed by the relay
            descs[i] += " (back-end channel, relayed by vuinspect)"
            break
        return fds, tuple(descs)

    def link_done(self, link: Link, info: dict[str, object]) -> None:
        """Emit the link's close frame (after an open frame, even for a silent connection)."""
        with self._lock:
            if link.channel == "main" and not self.opened:
                self._open(("frontend", "backend"), guessed=True)
            if link in self.links:
                self.links.remove(link)
        self.emit(event_frame("close", time.time_ns(), self.conn, info, link.channel))
        self.server._untrack(link)

    # -- setup -------------------------------------------------------------------
    def run(self) -> None:
        """Connect upstream and start relaying (runs on its own short-lived thread)."""
        route = self.route
        roles = _roles_for(route.frontend)
        upstream, reason = self._reach()
        if upstream is None:
            self.accepted.close()
            self.server.failures.failed(
                route.listen, self.conn, reason, partial(self.fail, reason, roles)
            )
            return
        self.server.failures.connected(route.listen)
        if roles is not None:
            with self._lock:
                self._open(roles, guessed=False)
        self.main = Link(self, "main", (self.accepted, upstream), roles)
        with self._lock:
            self.links.append(self.main)
        self.server._track(self.main)
        self.main.start()

    def fail(self, reason: str, roles: Roles | None) -> None:
        """Emit the open and close frames of a connection that never reached its target."""
        with self._lock:
            self._open(roles or ("frontend", "backend"), guessed=roles is None)
        self.emit(
            event_frame(
                "close", time.time_ns(), self.conn, {"reason": reason, "by": "proxy", "error": True}
            )
        )

    def _reach(self) -> tuple[socket.socket | None, str]:
        """The upstream socket, or None and why: retries until the route's connect timeout.

        A target that is missing or refuses (not up yet, restarting) gets that
        long to appear; meanwhile the accepted peer waits, as it would for a
        slow accept.  Gives up early when the peer hangs up or the proxy stops.
        """
        server = self.server
        path = self.route.connect
        start = time.monotonic()
        deadline = start + self.route.connect_timeout
        holding = False
        try:
            while True:
                try:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                except OSError as exc:
                    error: OSError = exc
                else:
                    try:
                        upstream.setblocking(False)  # a full backlog must not block us
                        upstream.connect(path)
                        upstream.setblocking(True)
                        return upstream, ""
                    except OSError as exc:
                        upstream.close()
                        error = exc
                waited = time.monotonic() - start
                reason = f"could not connect to {path}: {error.strerror or error}"
                if waited >= 0.1:
                    reason += f" (waited {waited:.1f} s)"
                left = deadline - time.monotonic()
                if left <= 0 or server._halt.is_set():
                    return None, reason
                if not holding:
                    holding = server._hold()
                    if not holding:
                        return None, reason + f" ({MAX_WAITING} connections already waiting)"
                if self._peer_gone(min(left, CONNECT_RETRY_S)):
                    return None, reason + " (the connecting peer hung up)"
        finally:
            if holding:
                server._unhold()

    def _peer_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True if the accepted peer closed its socket meanwhile."""
        p = select.poll()
        p.register(self.accepted, 0)  # only POLLHUP/POLLERR: its bytes wait for the target
        return bool(p.poll(timeout * 1000))


class ProxyServer:
    """Listens on every route and relays each accepted connection (see module doc)."""

    def __init__(
        self,
        routes: list[Route],
        sink: FrameSink | Callable[[Frame], None] | None,
        *,
        socket_mode: int = 0o600,
        queue_size: int = 65536,
        capture_buffer: int = BUDGET,
        on_idle: Callable[[], None] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """``sink``: a FrameSink (sink.py), or a callable fed through a FrameQueue
        (``queue_size`` frames, ``capture_buffer`` bytes at most), or None;
        ``recorder``: the engine's capture (a FrameSink with a ring sampler)."""
        if not routes:
            raise ValueError("at least one route is needed")
        if recorder is not None and sink is not None:
            raise ValueError("give a sink or a recorder, not both")
        self.routes = list(routes)
        self.socket_mode = socket_mode
        #: Encodes the capture on the forwarding threads (the engine's way; see recorder.py).
        self.recorder = recorder
        #: The consumer thread of a callable sink (None for any other sink).
        self.queue: FrameQueue | None = None
        if sink is not None and not isinstance(sink, FrameSink):
            self.queue = FrameQueue(sink, queue_size, on_idle, capture_buffer)
        #: The one place every link's frames go (relay.py); None: nothing records.
        self.sink: FrameSink | None = recorder or self.queue
        if self.sink is None and isinstance(sink, FrameSink):
            self.sink = sink  # (a callable sink got the queue above)
        #: The run's rules, addons and intercept (set by the engine; each link reads them).
        self.rules: RuleSet | None = None
        self._listeners: list[tuple[Listener, Route]] = []
        self._links: set[Link] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._halt = threading.Event()  # set by stop(): connections waiting for a target give up
        self._stopping = False
        self._starved = False  # accept() is failing for lack of fds (said once)
        self._waiting = 0  # connections waiting for their target (bounded by MAX_WAITING)
        self._started = False
        self._wake_r, self._wake_w = -1, -1
        self._acceptor: threading.Thread | None = None
        # Totals of links that already ended (live ones are summed on demand).
        self._done = {"frames": 0, "bytes": 0, "fds": 0}
        self.connections_total = 0
        self.on_error: Callable[[str], None] | None = None
        #: Connections that never reached their target, said once per series.
        self.failures = Failures(self.sink.event if self.sink is not None else None, self._say)

    # -- public API ----------------------------------------------------------------
    def start(self) -> None:
        """Bind every route (all or nothing), then start the threads and return."""
        if self._started:
            raise RuntimeError("ProxyServer.start() called twice")
        try:
            for route in self.routes:
                lst: Listener
                if route.interpose:
                    lst = Interposer(route.listen)  # keeps the original's mode and owner
                else:
                    lst = Listener(route.listen, self.socket_mode)
                lst.open()
                self._listeners.append((lst, route))
                if lst.note:
                    self._say(lst.note)
        except BaseException:
            for lst, _ in reversed(self._listeners):
                lst.close()
            self._listeners.clear()
            raise
        self._started = True
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.queue is not None:
            self.queue.start()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="vuinspect-accept", daemon=True
        )
        self._acceptor.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close listeners and connections (emitting close frames), deliver every frame."""
        with self._lock:
            if self._stopping or not self._started:
                self._stopped.set()
                return
            self._stopping = True
        self._halt.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        for lst, _ in self._listeners:
            lst.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.abort("proxy stopped")
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
                self._threads = set(threads)
            if not threads or time.monotonic() > deadline:
                break
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            # Links started meanwhile (a back-end channel set up while stopping) are aborted too.
            with self._lock:
                later = [lk for lk in self._links if lk not in links]
            for link in later:
                link.abort("proxy stopped")
                links.append(link)
        self.failures.end_all()
        if self.queue is not None:
            self.queue.close(timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished (True) or ``timeout`` passed (False)."""
        return self._stopped.wait(timeout)

    # -- counters ------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        with self._lock:
            links = list(self._links)
            done = dict(self._done)
        frames = done["frames"] + sum(sum(lk.frames) for lk in links)
        nbytes = done["bytes"] + sum(sum(lk.bytes) for lk in links)
        nfds = done["fds"] + sum(sum(lk.fds) for lk in links)
        return {
            "connections_total": self.connections_total,
            "connections_active": sum(1 for lk in links if lk.channel == "main"),
            "links_active": len(links),
            "connect_failures": self.failures.count,
            "frames_forwarded": frames,
            "bytes_forwarded": nbytes,
            "fds_forwarded": nfds,
            "frames_dropped": self.frames_dropped,
            "frames_delivered": self.queue.delivered if self.queue is not None else 0,
            "sink_errors": self.queue.sink_errors if self.queue is not None else 0,
            "open_fds": open_fd_count(),
        }

    @property
    def frames_forwarded(self) -> int:
        return self.stats()["frames_forwarded"]

    @property
    def frames_dropped(self) -> int:
        return getattr(self.sink, "dropped", 0)

    @property
    def active_links(self) -> int:
        with self._lock:
            return len(self._links)

    # -- internals -----------------------------------------------------------------
    def _track(self, link: Link) -> None:
        """Register a link before its threads start (stop() must see and join them)."""
        with self._lock:
            self._links.add(link)
            self._threads.update(link.threads)
            stopping = self._stopping
        if stopping:
            link.abort("proxy stopped")

    def _untrack(self, link: Link) -> None:
        with self._lock:
            self._links.discard(link)
            self._done["frames"] += sum(link.frames)
            self._done["bytes"] += sum(link.bytes)
            self._done["fds"] += sum(link.fds)

    def _hold(self) -> bool:
        with self._lock:
            if self._waiting >= MAX_WAITING:
                return False
            self._waiting += 1
            return True

    def _unhold(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _say(self, text: str) -> None:
        if self.on_error is not None:
            self.on_error(text)

    def _accept_backoff(self, lst: Listener, exc: OSError) -> bool:
        """accept() ran out of fds or memory: say so once, wait a little (True: stopping).

        The pending connection stays in the backlog, so retrying at once would
        spin a core until fds are free again.
        """
        if not self._starved:
            self._starved = True
            self._say(
                f"cannot accept connections on {lst.path}: {exc.strerror or exc}; "
                f"retrying every {ACCEPT_BACKOFF_S * 1000:.0f} ms"
            )
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        return bool(p.poll(ACCEPT_BACKOFF_S * 1000))

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        for lst, route in self._listeners:
            assert lst.sock is not None
            sel.register(lst.sock, selectors.EVENT_READ, (lst, route))
        try:
            while not self._stopping:
                for key, _ in sel.select():
                    if key.data is None:
                        return
                    lst, route = key.data
                    try:
                        accepted, _addr = lst.sock.accept()
                    except OSError as exc:
                        if exc.errno in _ACCEPT_RESOURCE_ERRORS and self._accept_backoff(lst, exc):
                            return
                        continue
                    if self._starved:
                        self._starved = False
                        self._say(f"accepting connections on {lst.path} again")
                    ts = time.time_ns()
                    connection = Connection(self, route, accepted, ts)
                    self.connections_total += 1
                    t = threading.Thread(
                        target=connection.run,
                        daemon=True,
                        name=f"vuinspect-{connection.conn}-setup",
                    )
                    with self._lock:
                        self._threads.add(t)
                    try:
                        t.start()
                    except RuntimeError as exc:  # out of threads: this connection only
                        with self._lock:
                            self._threads.discard(t)
                        accepted.close()
                        why = f"cannot start a thread: {exc}"
                        self.failures.failed(
                            route.listen, connection.conn, why, partial(connection.fail, why, None)
                        )
        finally:
            sel.close()
