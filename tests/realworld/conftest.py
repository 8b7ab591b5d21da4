"""Fixtures for the real-program tests: the guest (built once), short work dirs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from vuinspect.demo import runners
from vuinspect.demo.guest import Guest, build_guest

PROGRAMS = ("qemu-system-x86_64", "qemu-storage-daemon", runners.VIRTIOFSD, "dpdk-testpmd")


@pytest.fixture(scope="session")
def programs() -> None:
    """Skip (with the install hint) where the Debian programs are not installed."""
    try:
        for program in PROGRAMS:
            runners.require(program)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def guest(programs: None) -> Guest:
    """The cached test guest, built once per session by scripts/build-guest.sh."""
    return build_guest()


@pytest.fixture
def workdir() -> Path:
    """A short directory under /tmp (socket paths must stay < 108 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix="vurw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
