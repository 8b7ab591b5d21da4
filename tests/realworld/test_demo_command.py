"""`vuinspect demo` as a user runs it, and its guest builder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from vuinspect.demo.guest import BUILD_SCRIPT, pattern

from .captures import load


def test_guest_build_is_cached(guest):
    again = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=True)
    assert again.stdout.strip().splitlines()[-1] == str(guest.kernel.parent)
    assert guest.kernel.stat().st_size > 1 << 20 and guest.initrd.stat().st_size > 100_000


def test_pattern_matches_guest_shell_definition():
    # init.sh: `yes "$seed $i" | head -c 4096` per 4 KiB block
    data = pattern("s", 8)
    assert data[:4096] == (b"s 0\n" * 1024) and data[4096:4100] == b"s 1\n"
    assert hashlib.sha256(pattern()).hexdigest() == (
        "0abf270ac471ef81cdb2e8be3c939ac045804097b8a502af4c1ef0a000cfb9fd"
    )  # what the guest printed for vuseed=vuinspect vusize=1024 (see captures/README.md)


def test_demo_reports_missing_program(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # nothing installed there
    done = subprocess.run(
        [sys.executable, "-m", "vuinspect", "demo", "--backend", "net", "-w", str(tmp_path / "x.pcapng")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "vuinspect demo: qemu-system-x86_64 not found: run scripts/install-system-deps.sh"
    )


@pytest.mark.qemu
@pytest.mark.timeout(180)
def test_demo_blk_end_to_end(guest, tmp_path):
    cap = tmp_path / "demo.pcapng"
    done = subprocess.run(
        [sys.executable, "-m", "vuinspect", "demo", "-w", str(cap)],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OK: VUTEST-BLK-OK" in done.stderr
    assert "SET_VRING_KICK" in done.stdout  # the live one-line summaries
    assert "SET_VRING_KICK" in load(cap).names()
    # The closing hint works as typed in a shell whose PATH has no vuinspect (make demo's venv).
    hint = done.stderr.strip().splitlines()[-1].split("read it with: ", 1)[1]
    again = subprocess.run(
        ["bash", "-c", hint + " --stats"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
    )  # fmt: skip
    assert again.returncode == 0, (hint, again.stderr)
