"""What a link's poll waits for on each socket, and for how long.

A side is read only while it is open and its bytes have somewhere to go (the
backlog towards the other socket is empty); a socket is watched for room to
write only while its backlog has something that may go now (not a delayed or
held message).  A hang-up seen while a side is not read would wake poll in a
loop, so that socket is left unregistered until it is read again, and poll
then wakes every 200 ms to look.
"""

from __future__ import annotations

import select

from .backlog import Backlog
from .ending import HALF, OPEN

_IN = select.POLLIN
_OUT = select.POLLOUT
_BOTH_OPEN = [OPEN, OPEN]
_BOTH_IN = [_IN, _IN]


class Watch:
    """The poll registration of a link's two sockets (owned by the link's thread)."""

    __slots__ = ("poller", "events", "hup", "_fileno", "_state", "_backlog", "_out", "_held")

    def __init__(self, fileno: tuple[int, int], state: list[int], backlog: Backlog) -> None:
        self.poller = select.poll()
        self.events = [_IN, _IN]  # what each socket is registered for (-1: not registered)
        self.hup = [False, False]  # POLLHUP seen while not reading: unregistered until readable
        self._fileno = fileno
        self._state = state
        self._backlog = backlog
        self._out = backlog.out  # (bound once: update runs for every message with fds)
        self._held = backlog.held
        for fd in fileno:
            self.poller.register(fd, _IN)

    def update(self) -> None:
        """(Re)register both sockets for what their sides need now."""
        state = self._state
        out = self._out
        if not out[0] and not out[1] and state == _BOTH_OPEN and self.events == _BOTH_IN:
            return  # the common case: nothing changed
        for i in (0, 1):
            mask = 0
            if state[i] == OPEN and not out[1 - i]:
                mask |= _IN
            if out[i] and not self._backlog.waiting(i):
                mask |= _OUT
            if mask & _IN:
                self.hup[i] = False
            wanted = mask != 0 or (state[i] in (OPEN, HALF) and not self.hup[i])
            have = self.events[i]
            if not wanted:
                if have != -1:
                    self.poller.unregister(self._fileno[i])
                    self.events[i] = -1
            elif have != mask:
                if have == -1:
                    self.poller.register(self._fileno[i], mask)
                else:
                    self.poller.modify(self._fileno[i], mask)
                self.events[i] = mask

    def timeout(self) -> int | None:
        """poll's timeout: a socket left unregistered, or the next delayed message."""
        timeout = None if -1 not in self.events else 200
        if self._held[0]:
            ms = self._backlog.wait_ms()
            if ms is not None:
                timeout = ms if timeout is None else min(timeout, ms)
        return timeout
