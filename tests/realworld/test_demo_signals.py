"""`vuinspect demo` stopped by a signal or a closed terminal leaves nothing behind.

The demo's programs run in their own sessions, so a closed terminal's SIGHUP
reaches only the demo: it has to stop them itself (and remove its work
directory); a SIGKILLed demo cannot, so the kernel's parent-death signal does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.testing.procs import wait_until

WORKDIR = re.compile(rb"/tmp/vuinspect-demo-\w+")


def _ppids() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{name}/stat").read_bytes()
                out[int(name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return out


def _descendants(pid: int) -> dict[int, bytes]:
    """The processes below ``pid`` (children of children too) and their command lines."""
    ppids = _ppids()
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in ppids.items() if pp == parent]
        found += kids
        todo += kids
    cmdlines = {}
    for p in found:
        with contextlib.suppress(OSError):
            cmdlines[p] = Path(f"/proc/{p}/cmdline").read_bytes()
    return cmdlines


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent's wait()."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def _peers_up(pid: int) -> dict[int, bytes]:
    """Wait until the demo runs its back-end, the proxy and QEMU; those processes."""
    want = (b"qemu-storage-daemon", b"vuinspect\x00proxy", b"qemu-system")
    seen: dict[int, bytes] = {}

    def up() -> bool:
        seen.clear()
        seen.update(_descendants(pid))
        return all(any(w in c for c in seen.values()) for w in want)

    wait_until(up, 60, "the demo's qemu-storage-daemon, proxy and QEMU", interval=0.2)
    return dict(seen)


@contextlib.contextmanager
def _cleaned(peers: dict[int, bytes]) -> Iterator[None]:
    """Whatever the test ends with: no survivor (by pid) and no work directory."""
    try:
        yield
    finally:
        for pid in peers:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for cmdline in peers.values():
            for m in WORKDIR.finditer(cmdline):
                shutil.rmtree(os.fsdecode(m.group(0)), ignore_errors=True)


def _workdir(peers: dict[int, bytes]) -> Path:
    m = WORKDIR.search(b" ".join(peers.values()))
    assert m, peers
    return Path(os.fsdecode(m.group(0)))


def _all_gone(peers: dict[int, bytes], within: float) -> list[bytes]:
    """The command lines of the peers still alive after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(_alive(p) for p in peers):
        time.sleep(0.1)
    return [c.replace(b"\0", b" ")[:80] for p, c in peers.items() if _alive(p)]


@pytest.mark.qemu
@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_demo_stops_everything_on_a_signal(guest, tmp_path, sig):
    err = tmp_path / "demo.err"
    with open(err, "wb") as errf:
        demo = subprocess.Popen(
            [sys.executable, "-m", "vuinspect", "demo", "--no-tui", "-w", str(tmp_path / "d.pcapng")],
            stdout=subprocess.DEVNULL, stderr=errf, cwd=tmp_path,
        )  # fmt: skip
    try:
        peers = _peers_up(demo.pid)
        with _cleaned(peers):
            workdir = _workdir(peers)
            assert workdir.is_dir()
            started = time.monotonic()
            demo.send_signal(sig)
            assert demo.wait(10) == 128 + sig, err.read_text()
            assert time.monotonic() - started < 4, "the demo took too long to stop"
            assert _all_gone(peers, 1) == []
            assert not workdir.exists()
            name = signal.Signals(sig).name
            assert f"demo: stopped by {name}" in err.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)


@pytest.mark.qemu
@pytest.mark.timeout(90)
def test_closing_the_demos_terminal_stops_everything(guest, tmp_path):
    """The TUI demo in tmux; closing the session sends the demo SIGHUP."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    tmux = ["tmux", "-L", f"vudemo{os.getpid()}"]
    cmd = f"exec {sys.executable} -m vuinspect demo -w {tmp_path / 'd.pcapng'}"
    subprocess.run([*tmux, "new", "-d", "-s", "demo", "-x", "120", "-y", "35", cmd], check=True)
    try:
        pane = subprocess.run(
            [*tmux, "display", "-p", "-t", "demo", "#{pane_pid}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        demo = int(pane)
        peers = _peers_up(demo)
        with _cleaned({demo: b"", **peers}):
            workdir = _workdir(peers)
            subprocess.run([*tmux, "kill-session", "-t", "demo"], check=True)
            assert _all_gone({demo: b"vuinspect demo", **peers}, 5) == []
            assert not workdir.exists()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.qemu
@pytest.mark.timeout(90)
def test_a_killed_demo_leaves_no_programs_behind(guest, tmp_path):
    """SIGKILL cannot be handled: the programs get SIGTERM from the kernel instead."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "vuinspect", "demo", "--no-tui", "-w", str(tmp_path / "d.pcapng")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        peers = _peers_up(demo.pid)
        with _cleaned(peers):
            demo.kill()
            demo.wait(5)
            assert _all_gone(peers, 4) == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
