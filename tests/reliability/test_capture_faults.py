"""The capture under faults: a full disk, a read-only target, the proxy SIGKILLed mid-capture.

Traffic must never depend on the capture: when the disk fills up the proxy
says so on stderr and keeps forwarding.  A proxy killed with SIGKILL leaves a
file that ``vuinspect read`` and tshark both open up to the last whole
message, agreeing on how many there are, with the offset of any cut reported.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from vuinspect.capture import CaptureReader
from vuinspect.pipeline import Pipeline
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import busy_frontend_args, proxy_options, run_proxy

from .conftest import log_text, report, scaled, start_backend, start_proxy, stop, wait_until

pytestmark = pytest.mark.timeout(scaled(300, 3600))
LUA = os.path.join(os.path.dirname(__file__), "..", "..", "dissectors", "vhost_user.lua")


@contextlib.contextmanager
def tmpfs(path: str, options: str) -> Iterator[str]:
    """A tiny tmpfs mounted at ``path`` (we run as root in CI), unmounted at the end."""
    os.makedirs(path, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_disk_full_keeps_traffic_flowing(sockdir, procs) -> None:
    be = os.path.join(sockdir, "be.sock")
    px = os.path.join(sockdir, "px.sock")
    rounds = scaled(2000, 20000)
    with tmpfs(os.path.join(sockdir, "full"), "size=64k,mode=0700") as mnt:
        cap = os.path.join(mnt, "cap.pcapng")
        start_backend(procs, be)
        proxy = start_proxy(procs, px, be, "-w", cap)
        fe = Frontend(wire.connect(px, retries=50))
        fe.handshake()
        times = fe.round_trips(rounds, with_fd=True)
        fe.close()
        assert len(times) == rounds  # every round trip made it through
        wait_until(lambda: "capture stopped" in log_text(proxy), 10, "the disk-full message")
        assert proxy.poll() is None
        assert stop(proxy) == 0
        text = log_text(proxy)
        assert "No space left on device" in text and "forwarding continues" in text, text
        assert "Traceback" not in text, text
        reader = CaptureReader(cap)
        frames = sum(1 for _ in reader)
        size = os.path.getsize(cap)
        # the file holds whole blocks up to where the disk filled
        assert frames > 0
        message = [line for line in text.splitlines() if "capture stopped" in line][0]
    report(
        "capture_disk_full",
        tmpfs_bytes=64 * 1024,
        round_trips=rounds,
        capture_bytes=size,
        frames_in_capture=frames,
        reader_error=str(reader.error) if reader.error else None,
        stderr=message,
    )


def _refused_options(sockdir: str, cap: str) -> list[str]:
    """A proxy in ``sockdir`` (no back-end: the capture is refused first) writing to ``cap``."""
    px, be = os.path.join(sockdir, "px.sock"), os.path.join(sockdir, "be.sock")
    return proxy_options(px, be, "-w", cap, quiet=False)


def test_read_only_target_is_one_line(sockdir) -> None:
    with tmpfs(os.path.join(sockdir, "ro"), "size=64k,ro") as mnt:
        res = run_proxy(*_refused_options(sockdir, os.path.join(mnt, "cap.pcapng")))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"vuinspect proxy: cannot create capture {mnt}/cap.pcapng: Read-only file system"
    ]


def test_dev_full_target_is_one_line(sockdir) -> None:
    """Regression: CaptureWriter let the first write's OSError escape (a traceback)."""
    res = run_proxy(*_refused_options(sockdir, "/dev/full"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "vuinspect proxy: cannot write capture /dev/full: No space left on device"
    ]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_proxy_sigkilled_during_busy_capture(sockdir, procs) -> None:
    kills = scaled(3, 20)
    rng = random.Random(7)
    be = os.path.join(sockdir, "be.sock")
    backend = start_backend(procs, be)
    results = []
    for k in range(kills):
        px = os.path.join(sockdir, f"px{k}.sock")
        cap = os.path.join(sockdir, f"kill{k}.pcapng")
        proxy = start_proxy(procs, px, be, "-w", cap, name=f"proxy{k}")
        fes = [procs.start(busy_frontend_args(px), f"fe{k}.{i}") for i in range(3)]
        wait_until(lambda cap=cap: os.path.getsize(cap) > 200_000, 30, "a busy capture")
        time.sleep(rng.uniform(0.0, 0.5))
        os.kill(proxy.pid, signal.SIGKILL)
        proxy.wait(10)
        for p in fes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
        results.append(check_killed_capture(cap))
    assert backend.poll() is None
    cut = sum(1 for r in results if r["cut_at"] is not None)
    report(
        "capture_proxy_sigkill",
        kills=kills,
        files_cut_mid_block=cut,
        frames_read=[r["frames"] for r in results],
        bytes=[r["bytes"] for r in results],
    )


def check_killed_capture(cap: str) -> dict[str, object]:
    """``vuinspect read`` and tshark agree on the whole frames of a capture cut by SIGKILL."""
    reader = CaptureReader(cap)
    frames = list(reader)
    pipeline = Pipeline()
    codes = {c for m in pipeline.run(frames) for c in m.problem_codes}
    assert not codes & {"truncated_header", "truncated_payload", "framing_lost"}, codes
    res = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", cap],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in res.stderr
    messages = [line for line in res.stdout.splitlines() if line.strip()]
    if reader.error is None:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 2
        note = res.stderr.strip().splitlines()
        assert len(note) == 1 and f"capture damaged at byte {reader.error.offset}" in note[0]
        assert f"{len(frames)} whole frames before it were read" in note[0]
    assert len(messages) >= len(frames) * 0.9  # a line per message (events included)
    ts = subprocess.run(
        ["tshark", "-r", cap, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ts.returncode in (0, 2), ts.stderr
    assert len(ts.stdout.split()) == len(frames)
    if reader.error is not None:
        assert "cut short in the middle of a packet" in ts.stderr
    lua = subprocess.run(
        ["tshark", "-r", cap, "-X", f"lua_script:{LUA}", "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if os.path.exists(LUA):
        assert "Lua Error" not in lua.stdout + lua.stderr
        assert len(lua.stdout.split()) == len(frames)
    return {
        "frames": len(frames),
        "bytes": os.path.getsize(cap),
        "cut_at": reader.error.offset if reader.error else None,
    }
