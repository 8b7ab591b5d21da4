"""The Wireshark extcap runs the proxy's own engine (proxy/engine.py) into Wireshark's FIFO.

So what holds for ``vuinspect proxy`` holds for a capture started from Wireshark:
its rules act on the traffic and are noted in the capture, and the stop takes at
most ~2 s whatever the FIFO's reader does (stalled, or gone).  Real processes and
a real FIFO; the peers are raw sockets.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.frames import DATAPLANE_KINDS, event_info
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import backend_args, timed_stop, wait_path
from vuinspect.wireshark.extcap import INTERFACE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def where() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="vuxc"))  # (short socket paths)
    os.mkfifo(d / "ws.fifo")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Extcap:
    """The extcap as Wireshark runs it, between a raw front-end and a raw back-end."""

    def __init__(self, d: Path, *extra: str) -> None:
        self.fifo, self.listen, be = d / "ws.fifo", d / "px.sock", d / "be.sock"
        self.backend = wire.listen(str(be))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vuinspect.wireshark.extcap",
                "--capture",
                "--extcap-interface",
                INTERFACE,
                "--fifo",
                str(self.fifo),
                "--listen",
                str(self.listen),
                "--connect",
                str(be),
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_listening(self) -> Path:
        wait_path(str(self.listen), self.proc)
        return self.listen

    def connect(self) -> tuple[socket.socket, socket.socket]:
        fe = wire.connect(str(self.wait_listening()), retries=50)
        self.backend.settimeout(10)
        be, _ = self.backend.accept()
        be.settimeout(5)
        return fe, be

    def stop(self) -> float:
        """SIGTERM, as Wireshark stops a capture: how long the extcap took to end."""
        rc, took = timed_stop(self.proc, signal.SIGTERM, 20)
        assert rc == 0, self.proc.stderr.read() if self.proc.stderr else ""
        return took

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.backend.close()


def reader(fifo: Path, out: bytearray) -> threading.Thread:
    """Wireshark's side of the FIFO: reads everything until the extcap closes it."""

    def run() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read1(1 << 16):
                out.extend(chunk)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_extcap_rules_act_as_in_the_proxy(where):
    """``--rule`` (Wireshark's "Rule" field) drops the message and notes it in the capture."""
    data = bytearray()
    ext = Extcap(where, "--rule", "drop: name == SET_OWNER")
    try:
        t = reader(ext.fifo, data)
        fe, be = ext.connect()
        fe.sendall(wire.pack(wire.SET_OWNER))
        fe.sendall(wire.pack(wire.GET_FEATURES))
        got = wire.recv_msg(be)
        assert got is not None and got.request == wire.GET_FEATURES  # SET_OWNER never came
        time.sleep(0.3)
        ext.stop()
        t.join(10)
        fe.close()
        be.close()
        assert ext.proc.stderr is not None
        assert ext.proc.stderr.read() == ""  # (Wireshark shows an extcap's stderr as an error)
    finally:
        ext.close()
    frames = list(read_frames(io.BytesIO(bytes(data))))
    names = [f.data[:4] for f in frames if f.kind == "data"]
    assert len(names) == 2  # both recorded as they arrived
    notes = [event_info(f) for f in frames if f.kind == "note"]
    assert [(n.get("rule"), n.get("action")) for n in notes] == [
        ("drop: name == SET_OWNER", "drop")
    ]
    assert not ext.listen.exists()


def test_extcap_script_acts_as_in_the_proxy(where):
    """``--script`` (the "Addon script" field): the example masker clears EVENT_IDX in the
    back-end's offer on its way to the front-end; ``--capture-buffer`` is taken."""
    script = Path(__file__).resolve().parents[2] / "examples" / "mask_features.py"
    event_idx, version_1 = 1 << 29, 1 << 32
    data = bytearray()
    ext = Extcap(where, "--script", str(script), "--capture-buffer", "8M")
    try:
        t = reader(ext.fifo, data)
        fe, be = ext.connect()
        fe.sendall(wire.pack(wire.GET_FEATURES))
        got = wire.recv_msg(be)
        assert got is not None and got.request == wire.GET_FEATURES
        offer = (event_idx | version_1).to_bytes(8, "little")
        be.sendall(wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, offer))
        fe.settimeout(5)
        reply = wire.recv_msg(fe)
        assert reply is not None and reply.u64 == version_1  # EVENT_IDX masked
        ext.stop()
        t.join(10)
        fe.close()
        be.close()
        assert ext.proc.stderr is not None
        assert ext.proc.stderr.read() == ""
    finally:
        ext.close()
    assert sum(1 for f in read_frames(io.BytesIO(bytes(data))) if f.kind == "data") == 2


def test_extcap_samples_the_rings_as_the_proxy_does(where):
    """The ring sampler (on by default, as with ``proxy -w``) records ring frames into the FIFO."""
    data = bytearray()
    ext = Extcap(where)
    be_proc = None
    try:
        ext.backend.close()  # the in-repo back-end answers the handshake instead
        os.unlink(where / "be.sock")
        be_proc = subprocess.Popen(
            [sys.executable, "-m", *backend_args(str(where / "be.sock"))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t = reader(ext.fifo, data)
        wait_path(str(where / "be.sock"), be_proc)
        fe = Frontend(wire.connect(str(ext.wait_listening()), retries=50))
        fe.handshake(queues=1)
        time.sleep(0.5)
        ext.stop()
        t.join(10)
        fe.close()
    finally:
        ext.close()
        if be_proc is not None:
            be_proc.terminate()
            be_proc.wait(10)
    frames = list(read_frames(io.BytesIO(bytes(data))))
    assert any(f.kind in DATAPLANE_KINDS for f in frames), {f.kind for f in frames}


def test_extcap_stops_within_2s_while_wireshark_does_not_read(where):
    """A FIFO whose reader stalls (full pipe) holds neither the forwarding nor the stop."""
    ext = Extcap(where)
    f = None
    try:
        f = open(ext.fifo, "rb")  # noqa: SIM115 - opened, never read
        fe, be = ext.connect()
        blob = wire.pack(wire.SET_CONFIG, payload=b"\0" * 4000)
        for _ in range(400):  # ~1.6 MB: far more than the FIFO holds ...
            fe.sendall(blob)
            msg = wire.recv_msg(be)  # ... and all forwarded while the capture takes nothing
            assert msg is not None and msg.request == wire.SET_CONFIG
        took = ext.stop()
        assert took < 2.5, f"the extcap took {took:.1f} s to stop"
        fe.close()
        be.close()
    finally:
        if f is not None:
            f.close()
        ext.close()
    assert not ext.listen.exists()


def test_extcap_ends_when_wireshark_closes_the_fifo(where):
    """Wireshark gone (its end of the FIFO closed): the extcap ends on its own, sockets removed."""
    ext = Extcap(where)
    try:
        with open(ext.fifo, "rb") as f:
            fe, be = ext.connect()
            assert f.read1(4)  # the section header came
        fe.sendall(wire.pack(wire.GET_FEATURES))  # the next write finds no reader
        rc = ext.proc.wait(5)
        assert rc == 0, ext.proc.stderr.read() if ext.proc.stderr else ""
        fe.close()
        be.close()
    finally:
        ext.close()
    assert not ext.listen.exists()
