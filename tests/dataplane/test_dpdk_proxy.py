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


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_virtio_user_to_net_vhost_through_the_proxy(packed: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="vudpp-", dir="/tmp"))
    be_sock, px_sock, cap = work / "be.sock", work / "px.sock", work / "cap.pcapng"
    try:
        with contextlib.ExitStack() as stack:
            be = stack.enter_context(
                runners.testpmd(
                    be_sock, work, client=False, small=True, forward="rxonly", name="backend"
                )
            )
            runners.wait_for_socket(be_sock, 20, be)
            stack.enter_context(
                runners.proxy(
                    px_sock, be_sock, cap, work, extra=["--device", "net", "--rings", "on", "-q"]
                )
            )
            stack.enter_context(
                runners.testpmd(
                    px_sock,
                    work,
                    frontend=NUM,
                    packed=packed,
                    small=True,
                    forward="txonly",
                    name="frontend",
                )
            )
            # traffic until the samples show what is checked below, at most 30 s (two
            # busy-polling testpmds on 2 CPUs can starve the sampler on a loaded machine)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _enough(ring_samples(cap), packed):
                time.sleep(0.5)
        samples = []
        with CaptureReader(str(cap)) as reader:
            samples = [json.loads(f.data) for f in reader if f.kind == "ring"]
        tx = _moving_tx(samples)
        assert len(tx) >= 10, samples[:5]
        span_s = (tx[-1]["ts_ns"] - tx[0]["ts_ns"]) / 1e9
        assert _moves(tx) >= 5 * NUM, (_moves(tx), span_s)
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


def _moving_tx(samples: list[dict]) -> list[dict]:
    """The transmit ring's samples taken while it ran."""
    return [s for s in samples if s["vring"] == 1 and s["ok"]]


def _moves(tx: list[dict]) -> int:
    """Slots the used index advanced over the samples: many laps of the ring over a run.
    (Packed: a sample walks at most one lap from the last position, so faster rings show
    one lap a sample: a lower bound; split rings' u16 indices count every slot.)"""
    return sum((b["used_idx"] - a["used_idx"]) & 0xFFFF for a, b in zip(tx, tx[1:], strict=False))


def _enough(samples: list[dict], packed: bool) -> bool:
    """Do the samples so far show all the test checks (so the traffic can stop)?"""
    tx = _moving_tx(samples)
    flipped = all({s.get(k) for s in tx} == {0, 1} for k in ("avail_wrap", "used_wrap"))
    return len(tx) >= 12 and _moves(tx) >= 5 * NUM and (flipped or not packed)
