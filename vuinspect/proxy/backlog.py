"""A link's send backlog: what waits for room in a socket, for a delay rule, or for the user.

Sends never block (``MSG_DONTWAIT``).  What does not fit waits here, in order,
per destination socket; the link does not read the socket the bytes came from
until its backlog is written, so back-pressure reaches the sender as on a
direct connection.  A delay rule's message waits here too until its time
(``Unsent.due``), and the TUI's intercept keeps a held message here until the
user decides (holds.py): that direction waits as for a slow peer, the other
one flows.
"""

from __future__ import annotations

import array
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vuinspect.holds import HOLD_TICK_NS

from .fds import close_all

if TYPE_CHECKING:
    from vuinspect.verdict import Verdict

_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_DONTWAIT = int(socket.MSG_DONTWAIT)


class Unsent:
    """Bytes (and fds not yet sent) waiting for room in a socket."""

    __slots__ = ("view", "fds", "due", "hold")

    def __init__(self, view: memoryview, fds: list[int], due: int = 0, hold: Any = None) -> None:
        self.view = view
        self.fds = fds
        self.due = due  # monotonic ns before which a delayed message is not sent (0: now)
        self.hold = hold  # holds.Hold: held until the user decides (the TUI's intercept)


def send_now(sock: socket.socket, view: memoryview, fds: list[int], keep: bool = False) -> int:
    """One non-blocking send; fds go with the first byte and are closed once sent.

    Returns the bytes sent (0 if the socket is full; the fds then stay ours).
    ``keep``: never close the fds (the caller still describes them, then closes).
    A 0-byte sendmsg with fds would silently lose them (TECH.md §5), but a
    unit with fds always has at least one byte: fds arrive with data.
    """
    try:
        if fds:
            sent = sock.sendmsg(
                [view], [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", fds))], _DONTWAIT
            )
            if not keep:
                close_all(fds)
            return sent
        return sock.send(view, _DONTWAIT)
    except BlockingIOError:
        return 0
    except OSError:
        if not keep:
            close_all(fds)
        raise


class Backlog:
    """The two backlogs of a link (``out[i]``: waiting to go to ``socks[i]``).

    ``held`` counts the messages a delay or a hold keeps back (a one-item list:
    the link's loop reads it on every wake-up).  ``notes(ts, source)`` records
    the note infos of a hold once its decision is carried out.  A send error is
    raised as ``OSError`` for the link to end on.
    """

    __slots__ = ("socks", "out", "held", "stopping", "_notes")

    def __init__(
        self,
        socks: tuple[socket.socket, socket.socket],
        notes: Callable[[int, Any], None],
    ) -> None:
        self.socks = socks
        self.out: tuple[list[Unsent], list[Unsent]] = ([], [])
        self.held = [0]
        #: A stop: delays no longer wait, and a hold still undecided is dropped (holds.py).
        self.stopping = False
        self._notes = notes

    def delay(self, verdict: Verdict) -> tuple[int, Any]:
        """(due, hold) of a message a rule delays or the intercept holds; counted as held."""
        due = time.monotonic_ns() + int(verdict.delay_s * 1e9)
        hold = verdict.hold  # a hold: a delay until the user decides
        due += HOLD_TICK_NS if hold is not None else 0
        self.held[0] += 1
        return due, hold

    def flush(self, dst: int) -> bool:
        """Write as much of the backlog towards ``dst`` as fits; True once it is empty."""
        out = self.out[dst]
        while out:
            p = out[0]
            if p.due:
                if p.hold is not None:
                    new = p.hold.outcome(self.stopping)  # the user's decision (holds.py)
                    if new is None:
                        p.due = time.monotonic_ns() + HOLD_TICK_NS
                        return False  # still held (and what follows it, in order)
                    self._notes(time.time_ns(), p.hold)
                    p.hold = None
                    p.view = memoryview(new)
                    if not new:  # dropped: its fds closed, nothing sent
                        close_all(p.fds)
                        p.fds = []
                        p.due = 0
                        self.held[0] -= 1
                        out.pop(0)
                        continue
                    p.due = 1
                if p.due > time.monotonic_ns() and not self.stopping:
                    return False  # a delay rule holds it (and what follows it, in order)
                p.due = 0
                self.held[0] -= 1
            sent = send_now(self.socks[dst], p.view, p.fds)
            if sent:
                p.fds = []
            if sent < len(p.view):
                p.view = p.view[sent:]
                return False
            out.pop(0)
        return True

    def answer(self, dst: int, data: bytes) -> None:
        """Send the proxy's own message (a rule's reply) to ``dst``, after what already waits."""
        pending = self.out[dst]
        sent = 0
        if not pending:
            sent = send_now(self.socks[dst], memoryview(data), [])
        if sent < len(data):
            pending.append(Unsent(memoryview(data)[sent:], []))

    def due_now(self) -> list[int]:
        """The destinations whose first waiting message's time has come."""
        now = time.monotonic_ns()
        return [dst for dst, out in enumerate(self.out) if out and out[0].due and out[0].due <= now]

    def waiting(self, dst: int) -> bool:
        """Is the first message towards ``dst`` delayed or held (no use waiting for room)?"""
        out = self.out[dst]
        return bool(self.held[0] and out[0].due > time.monotonic_ns())

    def wait_ms(self) -> int | None:
        """Milliseconds until the next delayed message is due (None: nothing delayed)."""
        if not self.held[0]:
            return None
        dues = [o[0].due for o in self.out if o and o[0].due]
        if not dues:
            return None
        return max(0, (min(dues) - time.monotonic_ns()) // 1_000_000 + 1)

    def discard(self) -> None:
        """The link closes: close the fds of what never went, tell each hold it was dropped."""
        for out in self.out:
            for p in out:
                close_all(p.fds)
                if p.hold is not None:  # never sent: the intercept's TUI stops showing it held
                    p.hold.decide("drop", why="connection closed before a decision")
                    self._notes(time.time_ns(), p.hold)
            out.clear()
