"""GuestMemory: mapping, translation (UVA, GPA, IOVA), bounds, lifecycle, no leaks."""

from __future__ import annotations

import os
import struct

import pytest

from vuinspect.dataplane import GuestMemory, GuestMemoryError, RegionSpec, regions_from
from vuinspect.protocol import features as F

from .guestimage import GPA, UVA, GuestImage, fd_count, maps_mentioning


@pytest.fixture
def img():
    image = GuestImage(size=1 << 16, mmap_offset=0x3100, name="vuinspect-dp-mem")
    yield image
    image.close()


def _code(excinfo) -> str:
    return excinfo.value.code


def test_uva_translation_honours_unaligned_mmap_offset(img):
    img.write(GPA + 0x10, b"hello guest")
    with GuestMemory() as mem:
        assert mem.set_table([img.spec], [img.fd]) == []
        assert mem.ring_space == "uva" and mem.buffer_space == "gpa"
        assert mem.read_ring(UVA + 0x10, 11) == b"hello guest"
        assert mem.read_buffer(GPA + 0x10, 11) == b"hello guest"
        assert mem.read(GPA + 0x10, 5, "gpa") == b"hello"


def test_gpa_addresses_change_how_ring_addresses_are_read(img):
    img.write(GPA + 0x20, b"ring")
    with GuestMemory() as mem:
        mem.set_table([img.spec], [img.fd])
        with pytest.raises(GuestMemoryError) as e:
            mem.read_ring(GPA + 0x20, 4)  # a GPA read as a front-end virtual address
        assert _code(e) == "guest_addr_unmapped"
        mem.set_features(protocol=F.protocol_mask("GPA_ADDRESSES"))
        assert mem.ring_space == "gpa"
        assert mem.read_ring(GPA + 0x20, 4) == b"ring"
        with pytest.raises(GuestMemoryError):
            mem.read_ring(UVA + 0x20, 4)


def test_reads_are_bounded_by_the_region(img):
    with GuestMemory() as mem:
        mem.set_table([img.spec], [img.fd])
        assert len(mem.read(GPA + img.size - 4, 4, "gpa")) == 4
        with pytest.raises(GuestMemoryError) as e:
            mem.read(GPA + img.size - 4, 8, "gpa")
        assert _code(e) == "guest_read_crosses_region"
        for addr in (GPA - 1, GPA + img.size, 0, (1 << 64) - 1):
            with pytest.raises(GuestMemoryError) as e:
                mem.read(addr, 1, "gpa")
            assert _code(e) == "guest_addr_unmapped"
        with pytest.raises(GuestMemoryError):
            mem.read(GPA, 1 << 30, "gpa")  # never allocates what a peer asks


def test_file_shrunk_by_the_peer_is_an_error_not_sigbus(img):
    with GuestMemory() as mem:
        mem.set_table([img.spec], [img.fd])
        os.ftruncate(img.fd, img.mmap_offset + 0x1000)
        assert len(mem.read(GPA, 16, "gpa")) == 16
        with pytest.raises(GuestMemoryError) as e:
            mem.read(GPA + 0x2000, 16, "gpa")
        assert _code(e) == "guest_read_crosses_region"


def test_mapping_is_read_only_shared_and_never_written(img):
    with GuestMemory() as mem:
        mem.set_table([img.spec], [img.fd])
        assert len(maps_mentioning("vuinspect-dp-mem")) == 1
        assert maps_mentioning("vuinspect-dp-mem", "rw-s")  # only the test's own mapping
        assert not maps_mentioning("vuinspect-dp-mem", "rw-p")
        region = mem._regions[0]
        with pytest.raises(TypeError):
            region.map[0:1] = b"x"


def test_region_table_add_remove_reset_and_mid_session_removal():
    a = GuestImage(size=0x10000, name="vuinspect-dp-a")
    b = GuestImage(size=0x10000, name="vuinspect-dp-b", gpa=GPA + 0x10000, uva=UVA + 0x10000)
    try:
        a.write(GPA, b"AAAA")
        b.write(GPA + 0x10000, b"BBBB")
        mem = GuestMemory()
        mem.set_table([a.spec], [a.fd])
        assert mem.add_region(b.spec, b.fd) == []
        assert mem.read(GPA + 0x10000, 4, "gpa") == b"BBBB"
        # adjacent regions: a read across the boundary is still refused
        with pytest.raises(GuestMemoryError):
            mem.read(GPA + 0xFFFE, 4, "gpa")
        assert mem.remove_region(RegionSpec(b.gpa, b.size, b.uva, 0))
        assert not maps_mentioning("vuinspect-dp-b")
        with pytest.raises(GuestMemoryError) as e:
            mem.read(GPA + 0x10000, 4, "gpa")
        assert _code(e) == "guest_addr_unmapped"
        assert mem.read(GPA, 4, "gpa") == b"AAAA"
        assert not mem.remove_region(b.spec)
        mem.set_table([b.spec], [b.fd])  # replaces: a is unmapped
        assert not maps_mentioning("vuinspect-dp-a") and mem.regions == (b.spec,)
        mem.reset()
        assert mem.regions == () and not maps_mentioning("vuinspect-dp-b")
        mem.close()
        with pytest.raises(GuestMemoryError):
            mem.read(GPA, 1, "gpa")
    finally:
        a.close()
        b.close()


def test_regions_that_cannot_be_mapped_are_problems_and_named_on_read(img):
    bad = [
        (RegionSpec(GPA, 1 << 30, UVA, 0), img.fd),  # larger than the file
        (RegionSpec(GPA, 0x1000, UVA, 0), -1),  # no fd
        (RegionSpec(GPA, 0, UVA, 0), img.fd),  # empty
    ]
    before = fd_count()
    for spec, fd in bad:
        with GuestMemory() as mem:
            problems = mem.add_region(spec, fd)
            assert [p.code for p in problems] == ["region_map_failed"]
            if spec.memory_size:
                with pytest.raises(GuestMemoryError) as e:
                    mem.read(GPA, 4, "gpa")
                assert _code(e) == "region_map_failed"
    assert fd_count() <= before  # (none left open; other tests' threads may close theirs)


def test_iotlb_translation_update_invalidate_and_miss(img):
    img.write(GPA + 0x800, struct.pack("<Q", 0x1122334455667788))
    with GuestMemory() as mem:
        mem.set_table([img.spec], [img.fd])
        mem.set_features(virtio=1 << F.ACCESS_PLATFORM_BIT)
        assert mem.ring_space == "iova" and mem.buffer_space == "iova"
        with pytest.raises(GuestMemoryError) as e:
            mem.read_ring(0xA000_0800, 8)
        assert _code(e) == "iotlb_miss"  # never a guess
        mem.iotlb_message({"type": 2, "iova": 0xA000_0000, "size": 0x1000, "uaddr": UVA, "perm": 3})
        assert mem.read_ring(0xA000_0800, 8) == struct.pack("<Q", 0x1122334455667788)
        with pytest.raises(GuestMemoryError) as e:
            mem.read_ring(0xA000_0FFC, 8)  # runs past the IOTLB entry
        assert _code(e) == "iotlb_miss"
        mem.iotlb_update(0xB000_0000, 0x1000, UVA - 0x10000)  # maps to no region
        with pytest.raises(GuestMemoryError) as e:
            mem.read_buffer(0xB000_0000, 4)
        assert _code(e) == "guest_addr_unmapped"
        mem.iotlb_message({"type": 3, "iova": 0xA000_0400, "size": 0x10})
        assert [t.iova for t in mem.iotlb] == [0xB000_0000]
        with pytest.raises(GuestMemoryError) as e:
            mem.read_ring(0xA000_0800, 8)
        assert _code(e) == "iotlb_miss"
        mem.reset()
        assert mem.iotlb == ()


def test_iotlb_is_bounded():
    from vuinspect.dataplane.memory import MAX_IOTLB

    mem = GuestMemory(iommu=True)
    for i in range(MAX_IOTLB + 10):
        mem.iotlb_update(i * 0x1000, 0x1000, i * 0x1000)
    assert len(mem.iotlb) == MAX_IOTLB
    assert mem.iotlb[0].iova == 10 * 0x1000  # the oldest went first
    mem.close()


def test_no_fd_or_mapping_stays_after_close():
    before = fd_count()
    images = [
        GuestImage(
            size=0x20000,
            mmap_offset=0x1000 * i + 0x10,
            name=f"vuinspect-dp-leak{i}",
            gpa=GPA + 0x100000 * i,
            uva=UVA + 0x100000 * i,
        )
        for i in range(3)
    ]
    mem = GuestMemory()
    mem.set_table([i.spec for i in images], [i.fd for i in images])
    assert mem.mapped == 3
    for i in images:  # the library holds its own dup: the test closes its copies
        i.close()
    assert fd_count() == before + 3
    assert mem.read(GPA + 0x200000, 4, "gpa") == b"\0" * 4
    mem.remove_region(images[0].spec)
    mem.add_region(images[0].spec, -1)
    mem.close()
    assert fd_count() <= before  # (none left open; other tests' threads may close theirs)
    assert not maps_mentioning("vuinspect-dp-leak")


def test_regions_from_payload_and_state_records():
    from vuinspect.state import Region

    payload = [{"guest_phys_addr": 1, "memory_size": 2, "userspace_addr": 3, "mmap_offset": 4}]
    assert regions_from(payload) == [RegionSpec(1, 2, 3, 4)]
    assert RegionSpec.from_payload(Region(1, 2, 3, 4, "fd")) == RegionSpec(1, 2, 3, 4)


def _hugetlbfs() -> str | None:
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[2] == "hugetlbfs"]
        with open("/proc/sys/vm/nr_hugepages") as f:
            pages = int(f.read())
    except OSError:
        return None
    return mounts[0] if mounts and pages >= 2 else None


@pytest.mark.skipif(_hugetlbfs() is None, reason="no hugetlbfs mount with free huge pages")
def test_hugetlbfs_region_with_unaligned_offset(tmp_path):
    import mmap

    path = os.path.join(_hugetlbfs(), f"vuinspect-dp-{os.getpid()}")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.unlink(path)
    try:
        huge = os.fstat(fd).st_blksize
        os.ftruncate(fd, 2 * huge)
        with mmap.mmap(fd, 2 * huge) as m:
            m[huge + 0x1000 : huge + 0x1004] = b"HUGE"
        with GuestMemory() as mem:
            assert mem.add_region(RegionSpec(GPA, huge - 0x1000, UVA, huge + 0x1000), fd) == []
            assert mem.read(GPA, 4, "gpa") == b"HUGE"
    finally:
        os.close(fd)
