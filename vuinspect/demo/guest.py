"""The small test guest: where it is built, what it writes, how it reports.

The guest (scripts/build-guest.sh) is a Debian kernel with a busybox initramfs
whose /init does one device's I/O and prints a verdict line on the serial
console.  The host regenerates the guest's data here so it can check the disk
image or the shared file byte for byte, not just trust the guest's word.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .runners import INSTALL_HINT, MissingProgram, RunError

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-guest.sh"

# "VUTEST-BLK-OK <sha256>", "VUTEST-FS-FAIL mount", ...; SeaBIOS may leave escape
# sequences in front of it on the same line, hence search(), not match().
VERDICT = re.compile(r"VUTEST-(?P<device>[A-Z]+)-(?P<status>OK|FAIL)(?: (?P<detail>[^\x1b]*))?")

DEFAULT_SEED = "vuinspect"


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path


def build_guest(timeout: float = 300) -> Guest:
    """Build (or reuse the cached) guest and return its kernel and initramfs."""
    if not BUILD_SCRIPT.is_file():
        raise MissingProgram(f"{BUILD_SCRIPT} not found: the demo needs a source checkout")
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RunError(f"building the guest took more than {timeout:g}s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MissingProgram(f"cannot build the guest: {last} ({INSTALL_HINT})")
    out = Path(done.stdout.strip().splitlines()[-1])
    return Guest(out / "vmlinuz", out / "initramfs.cpio.gz")


def cmdline(test: str, seed: str = DEFAULT_SEED, size_kib: int = 1024) -> str:
    """Kernel command line for one guest test (blk, fs, net)."""
    if size_kib <= 0 or size_kib % 64:
        raise ValueError("size_kib must be a positive multiple of 64")  # the guest reads in 64 KiB
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", seed):
        raise ValueError("seed must be one plain word")
    quiet = "" if os.environ.get("VUINSPECT_GUEST_VERBOSE") else " quiet"
    return f"console=ttyS0{quiet} panic=-1 vutest={test} vuseed={seed} vusize={size_kib}"


def pattern(seed: str = DEFAULT_SEED, size_kib: int = 1024) -> bytes:
    """The bytes the guest writes: each 4 KiB block is the line "<seed> <n>\\n" repeated."""
    blocks = []
    for n in range(size_kib // 4):
        line = f"{seed} {n}\n".encode()
        blocks.append((line * (4096 // len(line) + 1))[:4096])
    return b"".join(blocks)
