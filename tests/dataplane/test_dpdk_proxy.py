"""DPDK virtio-user (a front-end that is not QEMU) to dpdk-testpmd net_vhost through
``vuinspect proxy --rings on``, split and packed rings: the transmit ring's indices
advance over many laps, packed wrap counters flip, nothing is flagged but the packets
testpmd leaves posted when it stops (ring_reset_in_flight, true)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.blkguest import ring_samples
from vuinspect.capture import CaptureReader
from vuinspect.demo import runners

pytestmark = [
    pytest.mark.skipif(shutil.which("dpdk-testpmd") is None, reason="dpdk-testpmd not installed"),
    pytest.mark.timeout(90),
]
NUM = 256


def _close_stdin(proc: runners.Proc) -> None:
    if proc.popen.stdin:
        proc.popen.stdin.close()
    proc.wait_exit(10)


def _testpmd(vdev: str, mode: str, prefix: str) -> list[str]:
    return [
        runners.require("dpdk-testpmd"),
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        f"--file-prefix={prefix}",
        "--log-level=lib.eal:error",
        "--vdev",
        vdev,
        "--",
        "--nb-cores=1",
        "--total-num-mbufs=2048",
        f"--forward-mode={mode}",
        "--auto-start",
    ]


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_virtio_user_to_net_vhost_through_the_proxy(packed: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="vudpp-", dir="/tmp"))
    be_sock, px_sock, cap = work / "be.sock", work / "px.sock", work / "cap.pcapng"
    tag = f"{time.monotonic_ns() % 10**8}"
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                runners.running(
                    "backend",
                    _testpmd(f"net_vhost0,iface={be_sock},queues=1", "rxonly", "vube" + tag),
                    work,
                    stdin=subprocess.PIPE,
                    stop=_close_stdin,
                )
            )
            runners.wait_for_socket(be_sock, 20)
            stack.enter_context(
                runners.proxy(
                    px_sock, be_sock, cap, work, extra=["--device", "net", "--rings", "on", "-q"]
                )
            )
            vdev = f"net_virtio_user0,path={px_sock},queues=1,queue_size={NUM}" + (
                ",packed_vq=1" if packed else ""
            )
            stack.enter_context(
                runners.running(
                    "frontend",
                    _testpmd(vdev, "txonly", "vufe" + tag),
                    work,
                    stdin=subprocess.PIPE,
                    stop=_close_stdin,
                )
            )
            # 4 s of traffic, longer on a loaded machine (two busy-polling testpmds on
            # 2 CPUs can starve the sampler): until 12 moving tx samples, at most 20 s
            time.sleep(4)
            deadline = time.monotonic() + 16
            while time.monotonic() < deadline and len(_moving_tx(ring_samples(cap))) < 12:
                time.sleep(0.5)
        samples = []
        with CaptureReader(str(cap)) as reader:
            samples = [json.loads(f.data) for f in reader if f.kind == "ring"]
        tx = _moving_tx(samples)
        assert len(tx) >= 10, samples[:5]
        span_s = (tx[-1]["ts_ns"] - tx[0]["ts_ns"]) / 1e9
        # the counters advance, many laps of the ring over the run.  (Packed: a sample walks
        # at most one lap from the last position, so faster rings show one lap a sample:
        # a lower bound; split rings' u16 indices count every slot.)
        moves = sum(
            (b["used_idx"] - a["used_idx"]) & 0xFFFF for a, b in zip(tx, tx[1:], strict=False)
        )
        assert moves >= 5 * NUM, (moves, span_s)
        if packed:
            assert {s["avail_wrap"] for s in tx} == {0, 1}
            assert {s["used_wrap"] for s in tx} == {0, 1}
        rows = [
            json.loads(x)
            for x in subprocess.run(
                [sys.executable, "-m", "vuinspect", "read", "--json", str(cap)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.splitlines()
        ]
        # (testpmd stops its front-end with packets still posted on the transmit ring:
        # ring_reset_in_flight at the very end is true, and allowed)
        flagged = [
            (r["name"], p["code"])
            for r in rows
            for p in r["problems"]
            if r["kind"] in ("ring", "notify") and p["code"] != "ring_reset_in_flight"
        ]
        assert flagged == [], flagged[:5]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for p in ("vube" + tag, "vufe" + tag):
            shutil.rmtree(Path("/var/run/dpdk") / p, ignore_errors=True)


def _moving_tx(samples: list[dict]) -> list[dict]:
    """The transmit ring's samples taken while it ran."""
    return [s for s in samples if s["vring"] == 1 and s["ok"]]
