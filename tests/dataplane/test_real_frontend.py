"""A real front-end's rings read through the library: DPDK virtio-user (testpmd txonly).

testpmd's ``net_virtio_user`` is the front-end (no QEMU, no hugepages); the
back-end is ``RingBackend``, which maps the memory table through
``GuestMemory`` and never consumes a buffer.  So the transmit ring fills with
real packets, the receive ring with real empty buffers, and nothing is used:
the library must read the indices where DPDK put them, walk the chains to
real buffers, decode the virtio-net headers, and diagnose the stall.
Split and packed rings (``packed_vq=1``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.dataplane import (
    PackedTracker,
    SplitTracker,
    diagnose,
    diff,
    in_flight_chains,
    sample,
)
from vuinspect.dataplane.diagnose import is_receive_queue
from vuinspect.demo import runners
from vuinspect.testing import wire

from .guestimage import fd_count
from .ringbackend import RingBackend

pytestmark = [
    pytest.mark.skipif(shutil.which("dpdk-testpmd") is None, reason="dpdk-testpmd not installed"),
    pytest.mark.timeout(60),
]
RX, TX = 0, 1
NUM = 256
S = 1_000_000_000


@contextlib.contextmanager
def running_testpmd(packed: bool) -> Iterator[RingBackend]:
    """testpmd txonly on virtio-user, connected to a RingBackend; all cleaned up after."""
    work = Path(tempfile.mkdtemp(prefix="vudp-", dir="/tmp"))
    sock = work / "vu.sock"
    listener = wire.listen(str(sock))
    backend = RingBackend(listener, packed=packed)
    try:
        with runners.testpmd(sock, work, frontend=NUM, packed=packed, small=True, forward="txonly"):
            yield backend
    finally:
        backend.close()
        listener.close()
        shutil.rmtree(work, ignore_errors=True)


class Sampler:
    """What the proxy's sampler will do: one tracker per vring, a sample per look."""

    def __init__(self, backend: RingBackend) -> None:
        self.backend = backend
        self.samples: dict[int, list] = {RX: [], TX: []}
        self.trackers: dict[int, PackedTracker] = {}
        self.split = SplitTracker()
        self.problems: list = []

    def look(self) -> None:
        b = self.backend
        with b.lock:
            for index in (RX, TX):
                cfg = b.config(index)
                if cfg is None:
                    continue
                if cfg.packed and index not in self.trackers:
                    self.trackers[index] = PackedTracker.from_base(cfg.num, b.vrings[index].base)
                s = sample(b.mem, cfg, time.monotonic_ns(), self.trackers.get(index))
                self.samples[index].append(s)
                self.problems += list(s.problems)
                if index == TX and not cfg.packed:
                    self.problems += self.split.update(b.mem, cfg, s)

    def wait_full(self, timeout: float = 15) -> None:
        """Until the transmit ring stops filling (nobody consumes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.look()
            tx = self.samples[TX]
            if len(tx) > 5 and tx[-1].in_flight and tx[-1].avail_idx == tx[-5].avail_idx:
                return
            time.sleep(0.05)
        raise AssertionError(f"the transmit ring never filled: {self.samples[TX][-1:]}")


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_testpmd_txonly_fills_rings_that_nobody_consumes(packed):
    before = fd_count()
    with running_testpmd(packed) as backend:
        sampler = Sampler(backend)
        sampler.wait_full()
        samples = sampler.samples
        with backend.lock:
            assert backend.mem.ring_space == "uva" and backend.mem.mapped >= 1
            tx_cfg, rx_cfg = backend.config(TX), backend.config(RX)
            assert tx_cfg is not None and rx_cfg is not None
            assert tx_cfg.packed is packed
            last_tx, last_rx = samples[TX][-1], samples[RX][-1]
            tx_chains = in_flight_chains(backend.mem, tx_cfg, last_tx, "net")
            rx_chains = in_flight_chains(backend.mem, rx_cfg, last_rx, "net")

    assert sampler.problems == [] and all(s.ok for s in samples[TX] + samples[RX])
    # nothing is ever used; the driver made real buffers available
    assert last_tx.used_idx == 0 and 0 < last_tx.in_flight <= NUM
    assert last_rx.used_idx == 0 and 0 < last_rx.in_flight <= NUM
    if packed:
        assert last_tx.used_wrap == 1
    # transmit chains: readable packets with a virtio-net header (txonly: no offloads)
    assert tx_chains and all(not c.problems for c in tx_chains), tx_chains[0].problems
    assert all(c.header is not None and c.header["gso_type_name"] == "NONE" for c in tx_chains)
    assert all(c.readable >= 12 + 60 and c.writable == 0 for c in tx_chains)
    # receive chains: empty buffers the device may write
    assert rx_chains and all(
        not c.problems and c.writable > 0 and c.readable == 0 for c in rx_chains
    )
    # the back-end never consumed: stalled, with the in-flight count named
    findings = diagnose(samples[TX], now_ns=samples[TX][-1].ts_ns + 3 * S)
    stalled = [f for f in findings if f.code == "backend_stalled"]
    assert stalled and stalled[-1].active and stalled[-1].in_flight == last_tx.in_flight
    assert stalled[-1].vring == TX
    # the receive ring's posted buffers wait for packets: normal, not a stall
    assert is_receive_queue("net", RX) and not is_receive_queue("net", TX)
    assert diagnose(samples[RX], now_ns=samples[RX][-1].ts_ns + 3 * S, receive=True) == []
    assert (
        fd_count() <= before
    )  # (no fd left open; other tests' threads may close theirs meanwhile)


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_traffic_resumes_when_the_device_consumes(packed):
    """Stalled, then the test plays the device: the rings wrap, the stall resolves."""
    before = fd_count()
    with running_testpmd(packed) as backend:
        sampler = Sampler(backend)
        sampler.wait_full()
        time.sleep(0.5)  # stalled for a while
        sampler.look()
        consumed = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            consumed += backend.consume(TX)
            time.sleep(0.02)
            sampler.look()
        # A loaded machine can pause this loop past stall_s (testpmd busy-polls a CPU):
        # the stall that pause shows must resolve too once the device consumes again.
        for _ in range(50):
            if not [f for f in diagnose(sampler.samples[TX], stall_s=0.4) if f.active]:
                break
            consumed += backend.consume(TX)
            time.sleep(0.02)
            sampler.look()
    tx = sampler.samples[TX]
    assert sampler.problems == [] and all(s.ok for s in tx)
    assert all(not diff(a, b).problems for a, b in zip(tx, tx[1:], strict=False))
    moved = sum(diff(a, b).used_advanced for a, b in zip(tx, tx[1:], strict=False))
    assert consumed > 3 * NUM and moved >= consumed - NUM  # several laps of the ring
    if packed:
        flips = sum(
            diff(a, b).changed.get("used_wrap") is not None
            for a, b in zip(tx, tx[1:], strict=False)
        )
        assert flips >= 2
        assert {s.avail_wrap for s in tx} == {0, 1}
    findings = diagnose(tx, stall_s=0.4)
    assert findings and findings[0].code == "backend_stalled"
    assert findings[0].resolution == "progress" and findings[0].duration_ns >= 0.4 * S
    assert not [f for f in findings if f.active]
    assert (
        fd_count() <= before
    )  # (no fd left open; other tests' threads may close theirs meanwhile)
