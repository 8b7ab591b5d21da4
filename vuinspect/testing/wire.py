"""Sending and receiving whole vhost-user messages with their fds (blocking sockets)."""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("=III")
U64 = struct.Struct("=Q")
FLAG_VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
REPLY_FLAGS = FLAG_VERSION | FLAG_REPLY  # exactly 0x5, or QEMU drops the connection

# Front-end requests used by the peers (PROTOCOL.md §2).
GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
SET_MEM_TABLE = 5
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
SET_BACKEND_REQ_FD = 21
GET_CONFIG = 24
SET_CONFIG = 25
GET_MAX_MEM_SLOTS = 36
# Back-end channel requests (separate numbering, PROTOCOL.md §3).
BACKEND_CONFIG_CHANGE_MSG = 2
BACKEND_VRING_HOST_NOTIFIER_MSG = 3

ANC_SIZE = socket.CMSG_SPACE(253 * 4)


def pack(request: int, flags: int = FLAG_VERSION, payload: bytes = b"") -> bytes:
    return HEADER.pack(request, flags, len(payload)) + payload


@dataclass
class Msg:
    """One received message; ``fds`` are ours to close, ``inodes`` identify them."""

    request: int
    flags: int
    payload: bytes
    fds: list[int] = field(default_factory=list)
    inodes: list[tuple[int, int]] = field(default_factory=list)
    #: How many recvmsg calls delivered fds for this message (should be 0 or 1).
    fd_reads: int = 0

    @property
    def raw(self) -> bytes:
        return HEADER.pack(self.request, self.flags, len(self.payload)) + self.payload

    @property
    def u64(self) -> int:
        return U64.unpack_from(self.payload)[0]

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def fd_inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def send_raw(sock: socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    """One sendmsg carrying ``fds`` with the first byte, then the rest (as QEMU does)."""
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])
    else:
        sock.sendall(data)


def _recv_exact(
    sock: socket.socket, n: int, fds: list[int], at_start: bool
) -> tuple[bytes, int] | None:
    """Read exactly ``n`` bytes, collecting fds; returns (bytes, reads that carried fds)."""
    chunks = []
    got = 0
    fd_reads = 0
    while got < n:
        data, anc, flags, _ = sock.recvmsg(n - got, ANC_SIZE, socket.MSG_CMSG_CLOEXEC)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % 4])
                fds.extend(a)
                fd_reads += 1
        if flags & socket.MSG_CTRUNC:
            raise OSError("MSG_CTRUNC: fds lost")
        if not data:
            if got == 0 and at_start:
                return None
            raise EOFError(f"peer closed mid-message after {got} of {n} bytes")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks), fd_reads


def recv_msg(sock: socket.socket) -> Msg | None:
    """Read one whole message (header first, like libvhost-user); None at a clean EOF."""
    fds: list[int] = []
    got = _recv_exact(sock, HEADER.size, fds, True)
    if got is None:
        return None
    head, fd_reads = got
    request, flags, size = HEADER.unpack(head)
    payload = b""
    if size:
        body = _recv_exact(sock, size, fds, False)
        assert body is not None
        payload, more = body
        fd_reads += more
    return Msg(request, flags, payload, fds, [fd_inode(fd) for fd in fds], fd_reads)


def memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def connect(path: str, retries: int = 0, delay: float = 0.05) -> socket.socket:
    import time

    for attempt in range(retries + 1):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if attempt == retries:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def listen(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(64)
    return s
