"""A memfd guest mapped through a GuestMemory, for the ring and chain tests."""

from __future__ import annotations

import pytest

from vuinspect.dataplane import GuestMemory

from .guestimage import GuestImage


@pytest.fixture
def guest():
    """(image, memory): 64 KiB at GPA/UVA, stored at an unaligned mmap_offset."""
    img = GuestImage(size=1 << 16, mmap_offset=0x2010, name="vuinspect-dp-guest")
    mem = GuestMemory()
    mem.set_table([img.spec], [img.fd])
    yield img, mem
    mem.close()
    img.close()
