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

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vuinspect.dataplane import PackedTracker, diagnose, in_flight_chains, sample
from vuinspect.dataplane.diagnose import is_receive_queue
from vuinspect.demo import runners
from vuinspect.testing import wire

from .guestimage import fd_count
from .ringbackend import RingBackend

pytestmark = pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                                reason="dpdk-testpmd not installed")
RX, TX = 0, 1
NUM = 256
S = 1_000_000_000


def _close_stdin(proc: runners.Proc) -> None:
    if proc.popen.stdin:
        proc.popen.stdin.close()
    proc.wait_exit(10)


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_testpmd_txonly_fills_rings_that_nobody_consumes(packed):
    before = fd_count()
    work = Path(tempfile.mkdtemp(prefix="vudp-", dir="/tmp"))
    sock = work / "vu.sock"
    listener = wire.listen(str(sock))
    backend = RingBackend(listener, packed=packed)
    prefix = f"vudp{time.monotonic_ns() % 10**9}"
    vdev = f"net_virtio_user0,path={sock},queues=1,queue_size={NUM}" + (
        ",packed_vq=1" if packed else "")
    argv = [runners.require("dpdk-testpmd"), "--no-huge", "-m", "256", "--no-pci",
            f"--file-prefix={prefix}", "--log-level=lib.eal:error", "--vdev", vdev, "--",
            "--nb-cores=1", "--total-num-mbufs=2048", "--forward-mode=txonly", "--auto-start"]
    try:
        with runners.running("testpmd", argv, work, stdin=subprocess.PIPE, stop=_close_stdin):
            samples: dict[int, list] = {RX: [], TX: []}
            trackers: dict[int, PackedTracker] = {}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with backend.lock:
                    for index in (RX, TX):
                        cfg = backend.config(index)
                        if cfg is None:
                            continue
                        if cfg.packed and index not in trackers:
                            trackers[index] = PackedTracker.from_base(
                                cfg.num, backend.vrings[index].base)
                        samples[index].append(sample(backend.mem, cfg, time.monotonic_ns(),
                                                     trackers.get(index)))
                tx = samples[TX]
                if len(tx) > 5 and tx[-1].in_flight and tx[-1].avail_idx == tx[-5].avail_idx:
                    break  # the transmit ring is as full as DPDK will make it
                time.sleep(0.05)
            with backend.lock:
                assert backend.mem.ring_space == "uva" and backend.mem.mapped >= 1
                tx_cfg, rx_cfg = backend.config(TX), backend.config(RX)
                assert tx_cfg is not None and rx_cfg is not None
                assert tx_cfg.packed is packed
                last_tx, last_rx = samples[TX][-1], samples[RX][-1]
                tx_chains = in_flight_chains(backend.mem, tx_cfg, last_tx, "net")
                rx_chains = in_flight_chains(backend.mem, rx_cfg, last_rx, "net")
    finally:
        backend.close()
        listener.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(Path("/var/run/dpdk") / prefix, ignore_errors=True)

    assert all(s.ok and not s.problems for s in samples[TX] + samples[RX]), \
        [s.problems for s in samples[TX] + samples[RX] if s.problems][:3]
    # nothing is ever used; the driver made real buffers available
    assert last_tx.used_idx == 0 and 0 < last_tx.in_flight <= NUM
    assert last_rx.used_idx == 0 and 0 < last_rx.in_flight <= NUM
    if packed:
        assert last_tx.avail_wrap in (0, 1) and last_tx.used_wrap == 1
    # transmit chains: readable packets with a virtio-net header (txonly: no offloads)
    assert tx_chains and all(not c.problems for c in tx_chains), tx_chains[0].problems
    assert all(c.header is not None and c.header["gso_type_name"] == "NONE" for c in tx_chains)
    assert all(c.readable >= 12 + 60 and c.writable == 0 for c in tx_chains)
    # receive chains: empty buffers the device may write
    assert rx_chains and all(not c.problems and c.writable > 0 and c.readable == 0
                             for c in rx_chains)
    # the back-end never consumed: stalled, with the in-flight count named
    findings = diagnose(samples[TX], now_ns=samples[TX][-1].ts_ns + 3 * S)
    stalled = [f for f in findings if f.code == "backend_stalled"]
    assert stalled and stalled[-1].active and stalled[-1].in_flight == last_tx.in_flight
    assert stalled[-1].vring == TX
    # the receive ring's posted buffers wait for packets: normal, not a stall
    assert is_receive_queue("net", RX) and not is_receive_queue("net", TX)
    assert diagnose(samples[RX], now_ns=samples[RX][-1].ts_ns + 3 * S, receive=True) == []
    assert fd_count() == before
