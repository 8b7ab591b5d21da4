"""Why a link ended: the first reason wins, whichever thread or path sees it.

A link can end from its own thread (EOF, a read or send error, a rule's
``disconnect``, a peer hoarding fds, a bug) or from another (a stop).  All of
them go through one :class:`EndReason`, so the ``close`` frame names the first
cause and never a consequence of it (the shutdown that follows a stop reads
as EOF).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import NoReturn

# States of one reading side.
OPEN = 0  # reading
DRAIN = 1  # EOF read; the backlog towards the other socket is still being written
HALF = 2  # EOF passed on as a half-close; waiting for the peer's full close (POLLHUP)
DONE = 3

#: How a link ended: "eof", "error" (reading or a bug), "send", "proxy" (a stop or a rule).
First = tuple[int, str, str]  # (peer side or -1 for the proxy, how, text)


class Ended(Exception):
    """The pair is finished (both sides done, stopped, or failed)."""


class EndReason:
    """The first reason a link ended, and whether its close was done (thread-safe)."""

    __slots__ = ("_lock", "first", "_closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first: First | None = None
        self._closed = False

    def note(self, side: int, how: str, text: str) -> None:
        """Record a reason unless one is already recorded."""
        with self._lock:
            if self.first is None:
                self.first = (side, how, text)

    def end(self, side: int, how: str, text: str) -> NoReturn:
        """Record a reason (the first wins) and stop the link's loop."""
        self.note(side, how, text)
        raise Ended

    def close_once(self) -> First | None:
        """The reason to close with, the first time only (None: already closed)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            return self.first or (-1, "proxy", "closed")


def close_info(first: First, role: Callable[[int], str]) -> dict[str, object]:
    """The ``close`` frame's info: the reason, who ended it (``role(side)`` of a peer side)."""
    peer_side, how, text = first
    info: dict[str, object] = {"reason": text, "by": role(peer_side) if peer_side >= 0 else "proxy"}
    if how == "error" or how == "send":
        info["error"] = True
    return info


def hung_up(sock: socket.socket) -> bool:
    """Has the peer closed its socket entirely (not just shut down writing)?"""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def pass_eof(
    src: socket.socket, dst: socket.socket, end: EndReason, side: int, who: str, more: str = ""
) -> bool:
    """Pass the EOF read from ``src`` on to ``dst`` the way it happened; True: a full close.

    A half-close (``shutdown(SHUT_WR)``) as a half-close, a full close (``src``
    shows POLLHUP) as a full shutdown.  QEMU notices a vanished back-end only
    by POLLHUP on its chardev, so a full close passed on as a mere half-close
    would leave it waiting forever.  ``who`` is the peer on ``src``; ``more``
    ends the reason's text.
    """
    hangup = hung_up(src)
    what = "closed the connection" if hangup else "shut down its sending side"
    end.note(side, "eof", f"{who} {what}{more}")
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_RDWR if hangup else socket.SHUT_WR)
    return hangup
