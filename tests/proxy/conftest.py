"""Fixtures for proxy tests: short socket dirs, a proxy with a recording sink, peer threads."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from vuinspect.frames import Frame, event_info
from vuinspect.proxy.server import ProxyServer, Route
from vuinspect.proxy.sink import DirectSink
from vuinspect.testing import procs as procs_mod
from vuinspect.testing import wire
from vuinspect.testing.backend import BackendServer


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory for sockets (AF_UNIX paths must stay under 108 bytes)."""
    d = tempfile.mkdtemp(dir="/tmp", prefix="vup-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Recorder:
    """A sink that keeps every frame (thread-safe append)."""

    frames: list[Frame] = field(default_factory=list)

    def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)

    def data(self, conn: int | None = None, channel: str | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.kind == "data"
            and (conn is None or f.conn == conn)
            and (channel is None or f.channel == channel)
        ]

    def events(self, kind: str, conn: int | None = None) -> list[dict]:
        return [
            event_info(f) | {"_conn": f.conn, "_channel": f.channel}
            for f in self.frames
            if f.kind == kind and (conn is None or f.conn == conn)
        ]

    def conns(self) -> list[int]:
        return sorted({f.conn for f in self.frames})

    def notes(self, key: str, n: int = 1) -> list[dict]:
        """The notes carrying ``key`` (``rule``, ``addon``); waits for ``n`` of them (frames
        reach the sink on another thread)."""

        def got() -> list[dict]:
            return [i for i in self.events("note") if key in i]

        if n:
            wait_until(lambda: len(got()) >= n, what=f"{n} {key} note(s)")
        return got()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """:func:`vuinspect.testing.procs.wait_until`, polling faster (in-process peers)."""
    procs_mod.wait_until(pred, timeout, what, interval=0.005)


@pytest.fixture
def backend_server(sockdir: str) -> Iterator[Callable[..., BackendServer]]:
    made: list[BackendServer] = []

    def make(name: str = "be.sock", **kw: object) -> BackendServer:
        b = BackendServer(os.path.join(sockdir, name), **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started; killed (by pid) if still running at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            kids = children(p.pid)  # a viewer's forwarding child outlives it by design
            p.kill()
            p.wait()
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. the engine of a proxy viewer."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    return found


@pytest.fixture
def proxy(sockdir: str) -> Iterator[Callable[..., tuple[ProxyServer, Recorder]]]:
    """Start a ProxyServer over the given routes with a recording sink; stopped at the end."""
    made: list[ProxyServer] = []

    def make(
        routes: list[Route], sink: Callable[[Frame], None] | None = None, **kw: object
    ) -> tuple[ProxyServer, Recorder]:
        rec = Recorder()
        # A callable ``sink`` goes through the server's FrameQueue; the recorder only
        # appends, so it takes the frames on the forwarding threads themselves.
        srv = ProxyServer(routes, sink or DirectSink(rec), **kw)  # type: ignore[arg-type]
        srv.start()
        made.append(srv)
        return srv, rec

    yield make
    for srv in made:
        srv.stop()


def stop_when_idle(srv: ProxyServer) -> None:
    """Wait until every link of ``srv`` has closed, then stop it: the recording is complete."""
    wait_until(lambda: srv.active_links == 0, what="links to close")
    srv.stop()


def relayed_pair(sockdir: str, proxy) -> tuple[socket.socket, socket.socket, ProxyServer, Recorder]:
    """Front-end and back-end ends of one connection through an in-process proxy (a
    ``proxy`` fixture's maker): (front-end socket, back-end socket, server, recorder)."""
    be_path = os.path.join(sockdir, "be.sock")
    px = os.path.join(sockdir, "px.sock")
    listener = wire.listen(be_path)
    srv, rec = proxy([Route(px, be_path, frontend="listen")])
    fe = wire.connect(px)
    be, _ = listener.accept()
    listener.close()
    return fe, be, srv, rec
