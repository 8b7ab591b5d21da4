"""The ring sampler on a real guest: QEMU (TCG) + qemu-storage-daemon through the proxy.

One run: the guest writes and reads back ``SIZE_KIB`` with O_DIRECT 64 KiB requests
(scripts/guest/init.sh), so it makes at least ``2 * SIZE_KIB / 64`` blk requests;
the used index of the request queue must advance at least that much.  In the
middle of the write, qemu-storage-daemon is stopped (SIGSTOP): within 3 s
``vuinspect read --json`` of the live capture shows ``backend_stalled`` on that
vring with the in-flight count, and the in-flight chains decode as blk IN/OUT
with a sector inside the disk; after SIGCONT the ring moves again, the
diagnosis is resolved (with its duration) and the guest's check still passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vuinspect.capture import CaptureReader
from vuinspect.demo import runners
from vuinspect.demo.guest import build_guest
from vuinspect.demo.scenarios import guest_run, pattern

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]

SIZE_KIB = 4096
DISK = 16 << 20


@pytest.fixture(scope="module")
def guest():
    try:
        for program in ("qemu-system-x86_64", "qemu-storage-daemon"):
            runners.require(program)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    return build_guest()


def ring_samples(path: Path) -> list[dict]:
    """The ring frames of a capture that may still be written (whole frames only)."""
    out = []
    with contextlib.suppress(Exception):
        reader = CaptureReader(str(path))
        try:
            for f in reader:
                if f.kind == "ring":
                    out.append(json.loads(f.data))
        finally:
            reader.close()
    return out


def read_json(path: Path, *args: str) -> list[dict]:
    r = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", *args, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode in (0, 2), r.stderr  # 2: the live file ends inside a block
    return [json.loads(line) for line in r.stdout.splitlines()]


def wait(cond, timeout: float, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(step)
    return None


def test_blk_rings_progress_stall_and_resume(guest, tmp_path_factory) -> None:
    work = Path(tmp_path_factory.mktemp("vurings", numbered=True))
    image = work / "disk.img"
    with open(image, "wb") as f:
        f.truncate(DISK)
    cap = work / "blk.pcapng"
    result: dict = {}
    with contextlib.ExitStack() as stack:
        qsd = stack.enter_context(runners.storage_daemon(image, work / "qsd.sock", work))
        stack.enter_context(
            runners.proxy(
                work / "vu.sock",
                work / "qsd.sock",
                cap,
                work,
                extra=["--device", "blk", "--rings", "on", "-q"],
            )
        )

        def run() -> None:
            result["out"] = guest_run(
                runners.blk_device(work / "vu.sock"),
                work,
                guest,
                "blk",
                seed="rings",
                size_kib=SIZE_KIB,
                timeout=180,
            )

        t = threading.Thread(target=run, daemon=True)
        t.start()
        stopped = False
        try:
            # The kernel's start of vring 0 (SeaBIOS started and stopped it before), then
            # its I/O under way (partition scan or the write): stop the back-end mid-I/O.
            def writing() -> bool:
                s = ring_samples(cap)
                starts = [i for i, x in enumerate(s) if x.get("event") == "start"]
                return len(starts) >= 2 and any(x["used_idx"] >= 12 for x in s[starts[-1] :])

            assert wait(writing, 120), "the guest's I/O never showed in the ring samples"
            os.kill(qsd.pid, signal.SIGSTOP)
            stopped = True
            t_stop = time.monotonic()

            def stalled() -> list[dict]:
                rows = read_json(cap)
                return [r for r in rows if "backend_stalled" in [p["code"] for p in r["problems"]]]

            found = wait(stalled, 10, 0.25)
            took = time.monotonic() - t_stop
            assert found, "no backend_stalled while the back-end was stopped"
            row = found[-1]
            assert took <= 3.0 + 0.5, f"backend_stalled took {took:.1f} s"  # (+ read's own time)
            assert row["kind"] == "ring" and row["payload"]["vring"] == 0
            in_flight = row["payload"]["in_flight"]
            assert in_flight >= 1 and f"{in_flight} in flight" in row["problems"][0]["text"]
            # the requests waiting in the ring, with their blk headers
            chains = [c for s in ring_samples(cap) for c in s.get("chains", ())]
            assert chains, "no in-flight chains sampled while stalled"
            for c in chains:
                h = c["header"]
                assert h["type_name"] in ("IN", "OUT", "FLUSH", "GET_ID"), h
                if h["type_name"] in ("IN", "OUT"):
                    assert 0 <= h["sector"] < DISK // 512, h
            assert any(c["header"]["type_name"] in ("IN", "OUT") for c in chains)
        finally:
            if stopped:
                os.kill(qsd.pid, signal.SIGCONT)
        t_cont = time.monotonic()

        def resolved() -> list[dict]:
            return [
                r
                for r in read_json(cap, "--rings")
                if any(x["code"] == "backend_stalled" for x in r["payload"].get("resolved", ()))
            ]

        done = wait(resolved, 10, 0.25)
        assert done, "the stall was not resolved after SIGCONT"
        assert time.monotonic() - t_cont < 5
        res = next(x for x in done[0]["payload"]["resolved"] if x["code"] == "backend_stalled")
        assert res["resolution"] == "progress" and res["duration_ns"] >= 2_000_000_000
        t.join(200)
    ok, verdict = result["out"]
    assert ok, verdict
    with open(image, "rb") as f:
        assert f.read(SIZE_KIB * 1024) == pattern("rings", SIZE_KIB)

    # the used index moved at least once per request the guest made (its 64 KiB
    # O_DIRECT writes and reads); the proxy's capture has every sample needed
    stats = json.loads(
        subprocess.run(
            [sys.executable, "-m", "vuinspect", "read", "--stats", "--json", str(cap)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )
    (ring0,) = [r for r in stats["rings"] if r["vring"] == 0]
    assert ring0["progress"] >= 2 * SIZE_KIB // 64, ring0
    assert not ring0["problems"], ring0  # nothing still active at the end


def test_blk_trace_notify_relays_and_counts(guest, tmp_path_factory) -> None:
    """--trace-notify: every kick and call passes through the proxy's eventfds; the guest's
    I/O still completes and checks; kicks and calls are counted; nothing is flagged."""
    from vuinspect.demo import scenarios

    work = Path(tmp_path_factory.mktemp("vunotify", numbered=True))
    cap = work / "blk.pcapng"
    out = scenarios.run_blk(
        work,
        guest,
        via=scenarios.ProxySpec(cap, extra=["--rings", "on", "--trace-notify"]),
        seed="notify",
        size_kib=1024,
    )
    assert out.ok, out.verdict
    stats = json.loads(
        subprocess.run(
            [sys.executable, "-m", "vuinspect", "read", "--stats", "--json", str(cap)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )
    (ring0,) = [r for r in stats["rings"] if r["vring"] == 0]
    assert ring0["kicks"] > 0 and ring0["calls"] > 0, ring0
    assert ring0["progress"] >= 2 * 1024 // 64, ring0
    rows = read_json(cap, "--rings")
    assert any(r["kind"] == "notify" for r in rows)
    flagged = [
        (r["frame"], p["code"])
        for r in read_json(cap)
        for p in r["problems"]
        if p["severity"] != "note"
    ]
    assert flagged == [], flagged
