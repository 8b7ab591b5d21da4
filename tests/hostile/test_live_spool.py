"""The live TUI's spool (F audit): the bytes a peer sends must not fill a disk unnoticed.

``LiveSource`` spools every frame the proxy's view gets to a private file in
$TMPDIR for as long as the view runs (often a tmpfs, i.e. memory).  When that
filesystem is full, ``push`` raised ``OSError``; the proxy's viewer feed
thread swallows it and ends the source, so the view silently stops at that
frame while the proxy goes on forwarding.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.frames import Frame

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_tmpdir(tmp_path: Path) -> Iterator[str]:
    """A 256 KiB tmpfs as tempfile's directory (unmounted afterwards)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {got.stderr.decode().strip()}")
    old = tempfile.tempdir
    tempfile.tempdir = str(mnt)
    try:
        yield str(mnt)
    finally:
        tempfile.tempdir = old
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_spool_is_said_in_the_view_not_raised(small_tmpdir: str) -> None:
    from vuinspect.tui.sources import LiveSource

    src = LiveSource("hostile")
    message = struct.pack("<III", 3, 1, 1024) + b"x" * 1024
    try:
        for i in range(1000):  # ~1 MiB through a 256 KiB filesystem
            src.push(Frame(i, 1, "main", "f2b", message))
            if i % 50 == 0:
                len(src)
        n = len(src)
        assert 0 < n < 1000
        assert src.frame(n - 1).kind == "note"  # the view says why it stops there
    finally:
        src.end()
        src.close()


def test_a_filesystem_that_fills_under_the_budget_is_said_too(small_tmpdir: str) -> None:
    """The budget is taken at the start; another writer may fill the disk before it."""
    from vuinspect.tui.sources import LiveSource

    src = LiveSource("hostile", budget=1 << 40)  # as if the disk had room for it all
    message = struct.pack("<III", 3, 1, 1024) + b"x" * 1024
    try:
        for i in range(1000):
            src.push(Frame(i, 1, "main", "f2b", message))
            if i % 50 == 0:
                len(src)
        n = len(src)
        assert 0 < n < 1000
        note = src.frame(n - 1)
        assert note.kind == "note" and b"No space left" in note.data
        assert [f.kind for f in src.frames_from(0)][-1] == "note"
        assert not src.ended  # the proxy goes on: its waiting requests are not given up
        src.end()
        len(src)
        assert src.ended
    finally:
        src.end()
        src.close()
