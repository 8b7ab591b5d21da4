"""Describe a passed file descriptor the way ``strace -yy`` would; take fds out of SCM_RIGHTS.

The proxy records what every SCM_RIGHTS fd *is* (guest RAM memfd, kick
eventfd, back-end channel socket ...) because the fd numbers themselves mean
nothing outside the proxy process.  Everything here only looks: readlink of
``/proc/self/fd/N`` and ``fstat``; the fd's offset, flags and contents are
never touched.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import stat

from ..protocol.requests import SCM_MAX_FD

#: Room in a control buffer for the most fds one message can carry.
ANC_SIZE = socket.CMSG_SPACE(SCM_MAX_FD * 4)
#: recvmsg flags of the relay: received fds are close-on-exec, and reads never block.
RECV_FLAGS = int(socket.MSG_CMSG_CLOEXEC) | int(socket.MSG_DONTWAIT)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)

_FAMILIES = {
    socket.AF_UNIX: "unix",
    socket.AF_INET: "inet",
    socket.AF_INET6: "inet6",
}
_TYPES = {
    socket.SOCK_STREAM: "stream",
    socket.SOCK_DGRAM: "dgram",
    socket.SOCK_SEQPACKET: "seqpacket",
}
# hugetlbfs files report the huge page size as their block size (2 MiB or 1 GiB on x86-64).
_HUGE_BLKSIZE = 2 * 1024 * 1024


def format_size(n: int) -> str:
    """``268435456`` -> ``256MiB``; sizes that are not whole units stay exact bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def hugetlbfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, ...]:
    """Mount points of hugetlbfs file systems (guest RAM from ``mem-path=/dev/hugepages``)."""
    mounts = []
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                # "36 35 0:31 / /dev/hugepages rw,relatime shared:13 - hugetlbfs hugetlbfs rw,pagesize=2M"
                left, sep, right = line.partition(" - ")
                if sep and right.split(" ", 1)[0] == "hugetlbfs":
                    fields = left.split(" ")
                    if len(fields) > 4:
                        mounts.append(_unescape(fields[4]))
    except OSError:
        pass
    return tuple(mounts)


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal ``\\040``."""
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def _under(path: str, mounts: tuple[str, ...]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _socket_kind(fd: int) -> str:
    """``unix-stream`` etc., found by wrapping the fd without taking it over."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return ""
    try:
        family = _FAMILIES.get(s.family, str(int(s.family)))
        kind = _TYPES.get(s.type, str(int(s.type)))
        return f"{family}-{kind}"
    finally:
        s.detach()  # the fd stays open and unchanged


#: Descriptions by (st_dev, st_ino, st_ctime_ns, hugetlbfs) of the inode: QEMU passes the
#: same guest RAM memfds and files again with every SET_MEM_TABLE, and on the forwarding
#: path one fstat is far cheaper than readlink through /proc.  ctime changes on rename
#: and truncate, so a hit is the same inode, unchanged; anon inodes (eventfd, timerfd ...)
#: all share one inode and are never cached.  Values: (text, append the size?, suffix).
_cache: dict[tuple, tuple[str, bool, str]] = {}
_CACHE_MAX = 4096


def describe_fd(fd: int, hugetlbfs: tuple[str, ...] | None = None) -> str:
    """A short human description of ``fd``, e.g. ``memfd:guest-ram size=256MiB``.

    ``hugetlbfs`` are the hugetlbfs mount points (read from mountinfo when not
    given; callers describing many fds pass them once).
    """
    try:
        st = os.fstat(fd)
    except OSError as exc:
        return f"invalid ({exc.strerror})"
    key = None
    if stat.S_IFMT(st.st_mode):
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, hugetlbfs)
        hit = _cache.get(key)
        if hit is not None:
            return _with_size(hit, st)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        return f"invalid ({exc.strerror})"
    parts = _describe(fd, target, st, hugetlbfs)
    if key is not None:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = parts
    return _with_size(parts, st)


def _with_size(parts: tuple[str, bool, str], st: os.stat_result) -> str:
    text, sized, suffix = parts
    return f"{text} size={format_size(st.st_size)}{suffix}" if sized else text + suffix


def _describe(
    fd: int, target: str, st: os.stat_result, hugetlbfs: tuple[str, ...] | None
) -> tuple[str, bool, str]:
    """(text, sized, suffix) of ``fd`` from its /proc link ``target`` and its stat."""
    if target == "anon_inode:[eventfd]":
        return "eventfd", False, ""  # the most common fd by far (kick/call/err)
    if target.startswith("/memfd:"):
        name = target[len("/memfd:") :]
        if name.endswith(" (deleted)"):
            name = name[: -len(" (deleted)")]
        return f"memfd:{name}", True, " hugetlb" if st.st_blksize >= _HUGE_BLKSIZE else ""
    if target.startswith("socket:"):
        kind = _socket_kind(fd)
        return (f"socket:{kind}" if kind else "socket"), False, ""
    if target.startswith("pipe:"):
        return "pipe", False, ""
    if target.startswith("anon_inode:"):
        return target, False, ""
    if target.startswith("/"):
        if hugetlbfs is None:
            hugetlbfs = hugetlbfs_mounts()
        prefix = "hugetlbfs" if _under(target, hugetlbfs) else "file"
        if stat.S_ISREG(st.st_mode):
            return f"{prefix}:{target}", True, ""
        if stat.S_ISCHR(st.st_mode):
            return f"chardev:{target}", False, ""
        if stat.S_ISDIR(st.st_mode):
            return f"dir:{target}", False, ""
        return f"{prefix}:{target}", False, ""
    return target, False, ""


def open_fd_count() -> int:
    """How many fds this process has open (leak checks in tests and stats)."""
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd")) - 1  # minus the fd listdir itself used
    return -1


# -- fds as they arrive with SCM_RIGHTS ------------------------------------------------------------
def fds_from_ancdata(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds


def close_all(fds: list[int]) -> None:
    close = os.close
    for fd in fds:
        try:  # noqa: SIM105 - a try block costs nothing in 3.11, contextlib.suppress ~0.5 µs
            close(fd)
        except OSError:
            pass


def discard_unread(sock: socket.socket) -> None:
    """Read and drop what a stopped pair left unread (closing fds that came with it).

    Closing a Unix socket with unread bytes makes the peer's next read fail with
    ECONNRESET instead of seeing EOF.  Both ends are shut down by now, so the
    peer cannot add more.
    """
    buf = bytearray(65536)
    for _ in range(1024):  # bounded, whatever happens
        try:
            n, anc, _, _ = sock.recvmsg_into([buf], ANC_SIZE, RECV_FLAGS)
        except OSError:
            return
        if anc:
            close_all(fds_from_ancdata(anc))
        if not n:
            return
