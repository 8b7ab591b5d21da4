"""Sending and receiving whole vhost-user messages with their fds (blocking sockets)."""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass, field

from ..framing import HOST_HEADER
from ..protocol.requests import FLAG_NEED_REPLY as FLAG_NEED_REPLY
from ..protocol.requests import FLAG_REPLY as FLAG_REPLY
from ..protocol.requests import REPLY_FLAGS as REPLY_FLAGS
from ..protocol.requests import VERSION
from ..protocol.requests import BackendRequest as _B
from ..protocol.requests import FrontendRequest as _F
from ..proxy.fds import ANC_SIZE, fds_from_ancdata

HEADER = HOST_HEADER  # request, flags, size in the host's order, as the peers send
U64 = struct.Struct("=Q")
FLAG_VERSION = VERSION

# The requests the peers use, by the names of protocol/requests.py (PROTOCOL.md §2-§3).
GET_FEATURES = _F.GET_FEATURES
SET_FEATURES = _F.SET_FEATURES
SET_OWNER = _F.SET_OWNER
SET_MEM_TABLE = _F.SET_MEM_TABLE
SET_VRING_NUM = _F.SET_VRING_NUM
SET_VRING_ADDR = _F.SET_VRING_ADDR
SET_VRING_BASE = _F.SET_VRING_BASE
GET_VRING_BASE = _F.GET_VRING_BASE
SET_VRING_KICK = _F.SET_VRING_KICK
SET_VRING_CALL = _F.SET_VRING_CALL
GET_PROTOCOL_FEATURES = _F.GET_PROTOCOL_FEATURES
SET_PROTOCOL_FEATURES = _F.SET_PROTOCOL_FEATURES
GET_QUEUE_NUM = _F.GET_QUEUE_NUM
SET_VRING_ENABLE = _F.SET_VRING_ENABLE
SET_BACKEND_REQ_FD = _F.SET_BACKEND_REQ_FD
GET_CONFIG = _F.GET_CONFIG
SET_CONFIG = _F.SET_CONFIG
GET_MAX_MEM_SLOTS = _F.GET_MAX_MEM_SLOTS
BACKEND_CONFIG_CHANGE_MSG = _B.BACKEND_CONFIG_CHANGE_MSG
BACKEND_VRING_HOST_NOTIFIER_MSG = _B.BACKEND_VRING_HOST_NOTIFIER_MSG


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
        got_fds = fds_from_ancdata(anc)
        if got_fds:
            fds.extend(got_fds)
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


def recv_within(sock: socket.socket, timeout: float = 5.0) -> Msg | None:
    """:func:`recv_msg` that gives up (TimeoutError) after ``timeout`` s of silence."""
    before = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        return recv_msg(sock)
    finally:
        sock.settimeout(before)


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
