"""Cut one direction of a vhost-user stream into whole messages, each with its own fds.

Why the proxy frames at all (TECH.md §5): the kernel glues earlier fd-less
bytes in front of a write that carried fds, so a raw chunk may hold the tail of
message A and all of message B with B's fds.  Forwarding that chunk as one
``sendmsg`` would hand B's fds to whoever reads A.  The rule that restores the
sender's intent: fds received with a chunk belong to the message that contains
the chunk's *last* byte.  This module applies it, sans-IO, so it can be tested
byte by byte; ``relay.py`` sends each unit it returns with one ``sendmsg``.

Bytes that cannot be framed (a header announcing an absurd size) are passed on
as they came, with their fds, and the direction stays in pass-through mode:
the proxy never fixes, drops or reorders traffic.

The fds held for an incomplete message are bounded by what one message can
carry (``SCM_MAX_FD``): a peer could otherwise announce a large payload and
send it a byte at a time, each byte with 253 fds, until the proxy runs out of
fds.  Fds beyond the bound go to :attr:`Framer.excess` for the caller to close
(they could never be forwarded with the message anyway).
"""

from __future__ import annotations

import struct
import sys

from ..protocol.requests import FORWARD_MAX_PAYLOAD, HEADER_SIZE
from .fds import SCM_MAX_FD

#: The proxy's framing limit (the protocol table's, passed to every Framer).
MAX_PAYLOAD = FORWARD_MAX_PAYLOAD
#: vhost-user integers are in the host's byte order.
BYTEORDER = sys.byteorder

_U32 = struct.Struct("=I")
_HDR = struct.Struct("=III")

Unit = tuple[bytes, list[int]]


def header(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(request, flags, size) of the message starting at ``data[0]``."""
    return _HDR.unpack_from(data, 0)


class Framer:
    """Turns received chunks (bytes + fds) into send units of one message each."""

    __slots__ = ("_buf", "_fds", "limit", "lost", "max_fds", "excess")

    def __init__(self, limit: int = MAX_PAYLOAD, max_fds: int = SCM_MAX_FD) -> None:
        self._buf = bytearray()
        self._fds: list[int] = []  # fds of the incomplete message in _buf
        self.limit = limit
        self.max_fds = max_fds
        #: Fds beyond ``max_fds`` held for the incomplete message: the caller closes them.
        self.excess: list[int] = []
        #: Why framing was given up (None while the stream frames fine).
        self.lost: str | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back until the rest arrives."""
        return len(self._buf)

    @property
    def pending_fds(self) -> list[int]:
        return self._fds

    def feed(self, data: bytes, fds: list[int]) -> list[Unit]:
        """Take one received chunk; return the units that are ready to send, in order."""
        if self.lost is not None:
            return [(data, fds)]
        buf: bytes | bytearray = self._buf
        if not buf:
            # Fast path: exactly one whole message, the common case.
            n = len(data)
            if n >= HEADER_SIZE:
                size = _U32.unpack_from(data, 8)[0]
                if n == HEADER_SIZE + size and size <= self.limit:
                    return [(data, fds)]
            buf = data
        else:
            buf += data
        carried = self._fds
        self._fds = []
        out: list[Unit] = []
        end = len(buf)
        off = 0
        while end - off >= HEADER_SIZE:
            size = _U32.unpack_from(buf, off + 8)[0]
            if size > self.limit:
                self.lost = (
                    f"header at stream offset +{off} announces {size} payload bytes "
                    f"(limit {self.limit}): passing bytes through unframed from here on"
                )
                unit_fds = (carried if off == 0 else []) + fds
                out.append((bytes(buf[off:]), unit_fds))
                self._buf = bytearray()
                return out
            stop = off + HEADER_SIZE + size
            if stop > end:
                break
            unit_fds = carried if off == 0 else []
            if stop == end:
                unit_fds = unit_fds + fds if unit_fds else fds
            out.append((bytes(buf[off:stop]), unit_fds))
            off = stop
        if off < end:
            # An incomplete message: it holds the chunk's last byte, so the chunk's fds.
            self._buf = bytearray(buf[off:])
            held = ((carried if off == 0 else []) + fds) if fds else (carried if off == 0 else [])
            if len(held) > self.max_fds:
                self.excess += held[self.max_fds :]
                held = held[: self.max_fds]
            self._fds = held
        else:
            self._buf = bytearray()
        return out

    def flush(self) -> Unit | None:
        """At end of stream: the incomplete message (bytes + fds) still held, if any."""
        if not self._buf and not self._fds:
            return None
        unit = (bytes(self._buf), self._fds)
        self._buf = bytearray()
        self._fds = []
        return unit
