"""The two example addons (examples/) through the proxy, with the in-repo peers."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from tests.addons.helpers import EXAMPLES, addon_notes, addon_proxy
from tests.proxy.conftest import wait_until
from tests.proxy.test_command import run_backend, start_proxy, stop
from vuinspect.testing import wire
from vuinspect.testing.backend import FEATURES, PROTOCOL_FEATURES
from vuinspect.testing.frontend import Frontend

pytestmark = pytest.mark.timeout(60)
LATENCY = os.path.join(EXAMPLES, "latency.py")
MASKER = os.path.join(EXAMPLES, "mask_features.py")
CONFIG_BIT = 1 << 9  # VHOST_USER_PROTOCOL_F_CONFIG (the test back-end offers it)
VERSION_1 = 1 << 32


def test_latency_injector(sockdir, proxy, backend_server, monkeypatch):
    monkeypatch.setenv("VUINSPECT_LATENCY_MS", "400")
    monkeypatch.setenv("VUINSPECT_LATENCY_REQUEST", "GET_VRING_BASE")
    backend_server()
    srv, rec, px = addon_proxy(proxy, sockdir, [LATENCY])
    fe = Frontend(wire.connect(px))
    t0 = time.monotonic()
    fe.handshake()
    assert time.monotonic() - t0 < 0.35  # nothing else is held
    t0 = time.monotonic()
    fe.call(wire.GET_VRING_BASE, struct.pack("=II", 0, 0))
    held = time.monotonic() - t0
    assert 0.39 <= held < 2, held
    t0 = time.monotonic()
    fe.call(wire.GET_FEATURES)
    assert time.monotonic() - t0 < 0.35
    fe.close()
    (n,) = addon_notes(rec)
    assert (n["addon"], n["action"], n["delay_s"]) == ("latency.py", "delay", 0.4)
    assert (
        n["original"]
        == n["new"]
        == wire.pack(wire.GET_VRING_BASE, 1, struct.pack("=II", 0, 0)).hex()
    )


def test_feature_masker(sockdir, proxy, backend_server, monkeypatch):
    monkeypatch.setenv("VUINSPECT_MASK", "VHOST_USER_PROTOCOL_F_CONFIG,VIRTIO_F_VERSION_1")
    backends = backend_server()
    srv, rec, px = addon_proxy(proxy, sockdir, [MASKER])
    fe = Frontend(wire.connect(px))
    fe.handshake()
    # The offers the front-end saw have the bits cleared ...
    got = {m.request: m.u64 for m in fe.received if m.request in (1, 15)}
    assert got == {
        wire.GET_FEATURES: FEATURES & ~VERSION_1,
        wire.GET_PROTOCOL_FEATURES: PROTOCOL_FEATURES & ~CONFIG_BIT,
    }
    # ... and so has what the back-end was told (the test front-end acks CONFIG regardless,
    # and here VERSION_1 too).
    fe.call(wire.SET_FEATURES, wire.U64.pack(FEATURES), need_reply=True)
    fe.close()
    wait_until(lambda: backends.backends and backends.backends[0].sock.fileno() == -1)
    acks = [(m.request, m.u64) for m in backends.backends[0].received if m.request in (2, 16)]
    assert acks[0] == (wire.SET_PROTOCOL_FEATURES, 0x629 & ~CONFIG_BIT)
    assert all(not v & VERSION_1 for r, v in acks if r == wire.SET_FEATURES)
    notes = addon_notes(rec, 4)
    assert {n["addon"] for n in notes} == {"mask_features.py"}
    assert all(n["action"] == "modify" and n["original"] != n["new"] for n in notes)
    first = notes[0]  # the GET_FEATURES reply: original offered, new masked
    assert wire.U64.unpack_from(bytes.fromhex(first["original"]), 12)[0] == FEATURES
    assert wire.U64.unpack_from(bytes.fromhex(first["new"]), 12)[0] == FEATURES & ~VERSION_1


def test_latency_injector_from_the_command_line(sockdir, procs):
    """``vuinspect proxy --script``: the delay is in the capture and the end summary."""
    from vuinspect.capture import read_frames
    from vuinspect.frames import event_info

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    log = Path(sockdir) / "proxy.log"
    env = dict(os.environ, VUINSPECT_LATENCY_MS="300")
    script = ("--script", LATENCY)
    proxy = start_proxy(procs, px, be, log, "-w", cap, *script, quiet=True, no_tui=False, env=env)
    fe = Frontend(wire.connect(px))
    fe.handshake()
    t0 = time.monotonic()
    fe.stop_queues()
    assert time.monotonic() - t0 >= 0.29
    fe.close()
    time.sleep(0.3)
    assert stop(proxy) == 0
    notes = [event_info(f) for f in read_frames(cap) if f.kind == "note"]
    assert [(n["addon"], n["action"]) for n in notes if "addon" in n] == [("latency.py", "delay")]
    assert "addons: latency.py acted 1 time(s), 0 error(s)" in log.read_text(), log.read_text()
