"""describe_fd: strace -yy style descriptions, without touching the fd."""

from __future__ import annotations

import os
import socket

from vuinspect.proxy.fds import describe_fd, format_size, hugetlbfs_mounts, open_fd_count


def test_format_size() -> None:
    assert format_size(256 << 20) == "256MiB"
    assert format_size(2 << 30) == "2GiB"
    assert format_size(4096) == "4KiB"
    assert format_size(1000) == "1000"
    assert format_size(0) == "0"


def test_memfd_name_and_size() -> None:
    fd = os.memfd_create("guest-ram", 0)
    try:
        os.ftruncate(fd, 256 << 20)
        assert describe_fd(fd) == "memfd:guest-ram size=256MiB"
    finally:
        os.close(fd)


def test_eventfd_pipe_socket() -> None:
    efd = os.eventfd(0)
    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert describe_fd(efd) == "eventfd"
        assert describe_fd(r) == "pipe"
        assert describe_fd(a.fileno()) == "socket:unix-stream"
        # The socket object still works: describe_fd did not take the fd over.
        a.sendall(b"x")
        assert b.recv(1) == b"x"
    finally:
        for fd in (efd, r, w):
            os.close(fd)
        a.close()
        b.close()


def test_regular_file_keeps_its_offset(tmp_path) -> None:
    p = tmp_path / "disk.img"
    p.write_bytes(b"a" * 8192)
    fd = os.open(p, os.O_RDWR)
    try:
        os.lseek(fd, 123, os.SEEK_SET)
        assert describe_fd(fd) == f"file:{p} size=8KiB"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 123
    finally:
        os.close(fd)


def test_hugetlbfs_by_mount_point(tmp_path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        f"36 22 0:31 / {tmp_path} rw,relatime shared:13 - hugetlbfs hugetlbfs rw,pagesize=2M\n"
    )
    mounts = hugetlbfs_mounts(str(mountinfo))
    assert mounts == (str(tmp_path),)
    f = tmp_path / "guest-mem"
    f.write_bytes(b"\0" * 4096)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert describe_fd(fd, mounts) == f"hugetlbfs:{f} size=4KiB"
        assert describe_fd(fd, ()) == f"file:{f} size=4KiB"
    finally:
        os.close(fd)


def test_other_anon_inode_and_closed_fd() -> None:
    import select

    ep = select.epoll()
    try:
        assert describe_fd(ep.fileno()) == "anon_inode:[eventpoll]"
    finally:
        ep.close()
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert describe_fd(r).startswith("invalid")


def test_open_fd_count_tracks_opens() -> None:
    before = open_fd_count()
    r, w = os.pipe()
    assert open_fd_count() == before + 2
    os.close(r)
    os.close(w)
    assert open_fd_count() == before


def test_repeated_descriptions_follow_changes(tmp_path) -> None:
    """Descriptions are cached per inode: a resize, a rename or another anon kind still shows."""
    fd = os.memfd_create("guest-ram", 0)
    try:
        os.ftruncate(fd, 1 << 20)
        assert describe_fd(fd) == "memfd:guest-ram size=1MiB"
        assert describe_fd(fd) == "memfd:guest-ram size=1MiB"
        os.ftruncate(fd, 2 << 20)
        assert describe_fd(fd) == "memfd:guest-ram size=2MiB"
    finally:
        os.close(fd)
    p = tmp_path / "a.img"
    p.write_bytes(b"\0" * 4096)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert describe_fd(fd, ()) == f"file:{p} size=4KiB"
        q = tmp_path / "b.img"
        os.rename(p, q)
        assert describe_fd(fd, ()) == f"file:{q} size=4KiB"
    finally:
        os.close(fd)
    import select

    efd = os.eventfd(0)
    ep = select.epoll()
    try:  # eventfd and epoll share the kernel's one anon inode: never mixed up
        for _ in range(2):
            assert describe_fd(efd) == "eventfd"
            assert describe_fd(ep.fileno()) == "anon_inode:[eventpoll]"
    finally:
        os.close(efd)
        ep.close()
