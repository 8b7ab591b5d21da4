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

from ..framing import cut_messages, one_message
from ..protocol.requests import FORWARD_MAX_PAYLOAD
from .fds import SCM_MAX_FD

Unit = tuple[bytes, list[int]]


class Framer:
    """Turns received chunks (bytes + fds) into send units of one message each.

    The cutting is :func:`vuinspect.framing.cut_messages` with the proxy's own
    limit (``FORWARD_MAX_PAYLOAD``, above the protocol's ``MAX_PAYLOAD``: a
    larger message is still forwarded whole, and the decoder flags it); this
    class adds the fds and the pass-through once framing is lost.
    """

    __slots__ = ("_buf", "_fds", "limit", "lost", "max_fds", "excess")

    def __init__(self, limit: int = FORWARD_MAX_PAYLOAD, max_fds: int = SCM_MAX_FD) -> None:
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
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += data
        else:
            head = one_message(data, "=")
            if head is not None and head[2] <= self.limit:
                return [(data, fds)]  # exactly one whole message, the common case
            buf = data
        carried = self._fds
        self._fds = []
        spans, rest, over = cut_messages(buf, self.limit, "=")
        end = len(buf)
        out: list[Unit] = []
        for start, stop in spans:
            unit_fds = carried if start == 0 else []
            if stop == end:
                unit_fds = unit_fds + fds if unit_fds else fds
            out.append((bytes(buf[start:stop]), unit_fds))
        lead = carried if rest == 0 else []  # fds of an incomplete message now at ``rest``
        if over is not None:
            self.lost = (
                f"header at stream offset +{rest} announces {over} payload bytes "
                f"(limit {self.limit}): passing bytes through unframed from here on"
            )
            out.append((bytes(buf[rest:]), lead + fds))
            self._buf = bytearray()
        elif rest < end:
            # An incomplete message: it holds the chunk's last byte, so the chunk's fds.
            self._buf = bytearray(buf[rest:])
            held = lead + fds if fds else lead
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
