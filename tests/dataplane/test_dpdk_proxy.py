"""DPDK virtio-user (a front-end that is not QEMU) to dpdk-testpmd net_vhost through
``vuinspect proxy --rings on``, split and packed rings: the transmit ring's indices
advance over many laps, packed wrap counters flip, nothing is flagged but the packets
testpmd leaves posted when it stops (ring_reset_in_flight, true).  testpmd frees (and
zeroes) its rings once GET_VRING_BASE is answered: a sample read after that is no look at
the ring (it read avail 256 -> 0 on the idle receive ring: a false ring_backwards)."""

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
        rows = _read(cap)
        # (testpmd stops its front-end with packets still posted on the transmit ring:
        # ring_reset_in_flight at the very end is true, and allowed)
        flagged = [
            (r["name"], p["code"])
            for r in rows
            for p in r["problems"]
            if r["kind"] in ("ring", "notify") and p["code"] != "ring_reset_in_flight"
        ]
        assert flagged == [], _details(cap, rows)  # (evaluated only on a failure)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(cap: Path, *extra: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", *extra, str(cap)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [json.loads(x) for x in out.splitlines()]


def _details(cap: Path, rows: list[dict]) -> str:
    """What a failure says: each flagged problem's frame, vring, event and text, with the
    frames before it (messages and every ring sample: ``read --rings``)."""
    by_frame = {r["frame"]: r for r in (*rows, *_read(cap, "--rings"))}
    frames = sorted(by_frame)
    keys = ("vring", "event", "avail_idx", "used_idx", "avail_flags", "index", "num")
    out: list[str] = []
    for i, n in enumerate(frames):
        r = by_frame[n]
        pay = r.get("payload") or {}
        for p in r["problems"]:
            if r["kind"] not in ("ring", "notify") or p["code"] == "ring_reset_in_flight":
                continue
            out.append(
                f"frame {n} vring {pay.get('vring')} event {pay.get('event')}: "
                f"{p['code']}: {p.get('text')}"
            )
            for m in frames[max(0, i - 10) : i + 3]:
                b = by_frame[m]
                bp = b.get("payload") or {}
                shown = {k: bp[k] for k in keys if k in bp}
                way = b["direction"] if b["kind"] == "message" else ""
                out.append(f"    {m} {b['name']} {way} {shown}")
        if len(out) > 80:
            break
    return "\n".join(out)


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
