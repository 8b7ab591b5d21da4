"""Relay one socket pair: two forwarding threads, one vhost-user message per sendmsg.

The loop per direction is deliberately small (TECH.md §5: one thread per
direction with blocking ``recvmsg`` measured fastest): receive a chunk and its
fds, frame it, queue a Frame, ``sendmsg`` each message with exactly its own
fds, close our copies.  The Frame is queued *before* the ``sendmsg`` so that a
reply can never reach the capture ahead of its request; queuing is a
non-blocking put, and decoding happens on another thread.

End of a pair: EOF on one side is passed on as ``shutdown(SHUT_WR)`` on the
other (a half-close, exactly what the reader of a direct connection would
see); a read or write error, or a stop, shuts both sockets down.  When both
directions are done the sockets are closed and a ``close`` frame with the
reason is emitted.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import struct
import threading
import time
from typing import Protocol

from vuinspect.frames import Channel, Direction, Frame, event_frame

from .fds import describe_fd
from .framing import MAX_MESSAGE, Framer

SCM_MAX_FD = 253
ANC_SIZE = socket.CMSG_SPACE(SCM_MAX_FD * 4)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_MSG_CMSG_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_MSG_CTRUNC = int(socket.MSG_CTRUNC)  # a plain int: IntFlag & costs µs per message
SET_BACKEND_REQ_FD = 21
_U32 = struct.Struct("=I")

Roles = tuple[str, str]  # role ("frontend"/"backend") of the peer on socks[0], socks[1]


class LinkOwner(Protocol):
    """What a Link needs from the connection it belongs to."""

    conn: int

    def emit(self, frame: Frame) -> None: ...
    def orient(self, link: Link, side: int) -> Roles: ...
    def intercept(self, link: Link, data: bytes, fds: list[int]) -> tuple[list[int], tuple[str, ...]]: ...
    def link_done(self, link: Link, info: dict[str, object]) -> None: ...


def fds_from_ancdata(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _hung_up(sock: socket.socket) -> bool:
    """Has the peer closed its socket entirely (not just shut down writing)?"""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def _wait_hangup(sock: socket.socket) -> None:
    p = select.poll()
    p.register(sock, 0)  # POLLHUP/POLLERR are always reported
    while not p.poll(1000):
        pass


class Link:
    """Two sockets relayed to each other, on one channel of one connection."""

    def __init__(
        self,
        owner: LinkOwner,
        channel: Channel,
        socks: tuple[socket.socket, socket.socket],
        roles: Roles | None,
    ) -> None:
        self.owner = owner
        self.channel = channel
        self.socks = socks
        self.roles = roles
        self._lock = threading.Lock()
        self._ended: list[tuple[str, str] | None] = [None, None]  # (how, text) per reading side
        self._first_end: tuple[int, str, str] | None = None  # (peer side, how, text)
        self._aborted = False
        self._closed = False
        self.threads = [
            threading.Thread(target=self._pump, args=(side,), daemon=True,
                             name=f"vuinspect-{owner.conn}-{channel}-{side}")
            for side in (0, 1)
        ]
        #: Per reading side: messages (or raw units) forwarded, bytes, fds.
        self.frames = [0, 0]
        self.bytes = [0, 0]
        self.fds = [0, 0]

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        for t in self.threads:
            t.start()

    def abort(self, text: str = "proxy stopped") -> None:
        """Stop relaying now (both directions wake up from recvmsg)."""
        with self._lock:
            if self._first_end is None:
                self._first_end = (-1, "proxy", text)
            self._aborted = True
        self._shutdown_all()

    def _shutdown_all(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def role(self, side: int) -> str:
        if self.roles is None:
            return "listen-side peer" if side == 0 else "connect-side peer"
        return self.roles[side]

    # -- the forwarding loop -----------------------------------------------------
    def _pump(self, side: int) -> None:
        src = self.socks[side]
        dst = self.socks[1 - side]
        framer = Framer()
        buf = bytearray(MAX_MESSAGE)
        view = memoryview(buf)
        bufs = [buf]
        recvmsg_into = src.recvmsg_into
        now = time.time_ns
        direction: Direction | None = None
        lost_noted = False
        how, text = "eof", ""
        ts = now()
        try:
            while True:
                try:
                    n, anc, flags, _ = recvmsg_into(bufs, ANC_SIZE, _MSG_CMSG_CLOEXEC)
                except OSError as exc:
                    how, text = "error", f"error reading from {{peer}}: {exc.strerror or exc}"
                    break
                ts = now()
                fds = fds_from_ancdata(anc) if anc else []
                if not n:
                    _close_all(fds)
                    break
                if direction is None:
                    direction = self._direction(side)
                if flags & _MSG_CTRUNC:
                    self._note(ts, "control data truncated (MSG_CTRUNC): the kernel dropped fds "
                               f"sent by the {self.role(side)}; {len(fds)} fd(s) arrived")
                units = framer.feed(bytes(view[:n]), fds)
                if framer.lost is not None and not lost_noted:
                    lost_noted = True
                    self._note(ts, f"{direction}: {framer.lost}")
                err = self._forward_units(side, dst, ts, direction, units)
                if err:
                    how, text = "send", err
                    break
        except Exception as exc:  # a bug must not leak fds or hang the peer
            how, text = "error", f"proxy error relaying from {{peer}}: {exc!r}"
        finally:
            rest = framer.flush()
            if rest is not None:
                data, fds = rest
                if how == "eof" and data and not self._aborted and direction is not None:
                    pend = len(data)
                    self._note(ts, f"{direction}: the {self.role(side)} closed mid-message; "
                               f"forwarding the {pend} byte(s) of the incomplete message as they came")
                    self._forward_units(side, dst, ts, direction, [(data, fds)])
                    text = f" mid-message ({pend} byte(s) of an incomplete message forwarded)"
                else:
                    _close_all(fds)
            self._side_ended(side, how, text)

    def _forward_units(self, side: int, dst: socket.socket, ts: int, direction: Direction,
                       units: list[tuple[bytes, list[int]]]) -> str:
        """Send each unit with one sendmsg; return an error text ('' if all went out)."""
        owner = self.owner
        conn = owner.conn
        channel = self.channel
        for i, (data, fds) in enumerate(units):
            if fds:
                if (channel == "main" and direction == "f2b" and len(data) >= 4
                        and _U32.unpack_from(data)[0] == SET_BACKEND_REQ_FD):
                    fds, descs = owner.intercept(self, data, fds)
                else:
                    descs = tuple(describe_fd(fd) for fd in fds)
                owner.emit(Frame(ts, conn, channel, direction, data, descs))
                try:
                    extra: list[int] = []
                    if len(fds) > SCM_MAX_FD:
                        fds, extra = fds[:SCM_MAX_FD], fds[SCM_MAX_FD:]
                        self._note(ts, f"{len(extra)} fd(s) beyond the kernel limit of {SCM_MAX_FD} "
                                   "for one message could not be forwarded")
                    sent = dst.sendmsg([data], [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", fds))])
                    if sent < len(data):
                        dst.sendall(memoryview(data)[sent:])
                except OSError as exc:
                    for _, later in units[i + 1:]:
                        _close_all(later)
                    return f"error sending to {{other}}: {exc.strerror or exc}"
                finally:
                    _close_all(fds)
                    _close_all(extra)
                self.fds[side] += len(fds)
            else:
                owner.emit(Frame(ts, conn, channel, direction, data))
                try:
                    dst.sendall(data)
                except OSError as exc:
                    for _, later in units[i + 1:]:
                        _close_all(later)
                    return f"error sending to {{other}}: {exc.strerror or exc}"
            self.frames[side] += 1
            self.bytes[side] += len(data)
        return ""

    # -- orientation, notes, end -------------------------------------------------
    def _direction(self, side: int) -> Direction:
        roles = self.roles
        if roles is None:
            roles = self.owner.orient(self, side)
        return "f2b" if roles[side] == "frontend" else "b2f"

    def _note(self, ts: int, text: str) -> None:
        self.owner.emit(event_frame("note", ts, self.owner.conn, {"text": text}, self.channel))

    def _side_ended(self, side: int, how: str, text: str) -> None:
        """Reading ``side`` is done: pass the end on the same way, close once both are done.

        A peer's EOF is passed on as it happened: a half-close (``shutdown(SHUT_WR)``)
        as a half-close, a full close (our socket shows POLLHUP) as a full shutdown.
        QEMU notices a vanished back-end only by POLLHUP on its chardev, so a full
        close passed on as a mere half-close would leave it waiting forever.
        """
        peer, other = self.role(side), self.role(1 - side)
        src, dst = self.socks[side], self.socks[1 - side]
        hangup = how == "eof" and _hung_up(src)
        if how == "send":
            # A write to the other peer failed: that peer is the one that went away.
            first = (1 - side, how, text.replace("{other}", other))
        elif how == "eof":
            what = "closed the connection" if hangup else "shut down its sending side"
            first = (side, how, f"{peer} {what}{text}")
        else:
            first = (side, how, text.replace("{peer}", peer))
        with self._lock:
            if self._first_end is None:
                self._first_end = first
            aborted = self._aborted
        if how == "eof" and not aborted:
            if not hangup:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                # Wait for the full close that usually follows (or for the other direction
                # to end, or a stop: both leave our socket fully shut down too).
                _wait_hangup(src)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
        else:
            self._shutdown_all()
        with self._lock:
            self._ended[side] = (how, first[2])
            both = self._ended[1 - side] is not None
        if both:
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            peer_side, how, text = self._first_end or (-1, "proxy", "closed")
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        info: dict[str, object] = {"reason": text}
        if peer_side >= 0:
            info["by"] = self.role(peer_side)
        else:
            info["by"] = "proxy"
        if how == "error" or how == "send":
            info["error"] = True
        self.owner.link_done(self, info)
