"""Every fd the ring sampler holds, over all connections, under one budget.

The sampler keeps fds a front-end sends: dups of a memory message's fds while the
message waits in its queue and then held back (``ConnState.pending``), and the fd of
each mapped region (CPython's ``mmap`` keeps its own dup) and inflight buffer.  A peer
(or many) flooding memory messages faster than the sampler's tick could make the proxy
hold as many fds as it sends, so all of them count against one :class:`FdBudget`:

- a memory message's dups are taken from the budget when the forwarding thread makes
  them (past it: none are made, and that connection's rings are given up, with a note);
- a new SET_MEM_TABLE supersedes the memory messages of its connection still queued
  (and a new SET_INFLIGHT_FD the older one): their dups are closed at once, by the
  forwarding thread, so a front-end resending its table holds one table's fds however
  fast it sends (the sampler skips a superseded message, unmapping rather than reading
  the rings through an older table);
- a connection's close closes its queued dups at once (the sampler's thread then
  unmaps the rest on its next drain, woken by the close);
- a mapping takes over the budget of the dup it was made from
  (:meth:`ConnState.recount`), and gives it back when unmapped.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections import deque

from ..protocol.requests import FrontendRequest as FE


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


#: The budget is at most this many fds: each mapped region is also a mapping, and the
#: kernel's vm.max_map_count (65 530 by default) is shared with the interpreter's own.
MAX_FD_BUDGET = 1 << 14


def default_budget() -> int:
    """Half the process's soft RLIMIT_NOFILE, at most MAX_FD_BUDGET.

    The other half is the proxy's own: ~5 sockets a connection (front-end, back-end,
    the back-end channel's pair) and the fds being forwarded (up to 8 a message, held
    only while it is sent).  The legitimate need: tests/reliability/test_proxy_load.py's
    64 connections each resend a 2-region table every 4th message; with superseded
    tables closed, a connection holds at most one table queued, one held back and one
    mapped (3 x 2 fds), 384 over 64 connections: within the 512 of the usual 1 024 limit.
    Measured: its proxy's fds peak at ~640 (sockets included) with a 1 024 limit as without
    [~6 300 before: the sampler kept every table sent between two ticks].
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_FD_BUDGET
    return max(0, min(soft // 2, MAX_FD_BUDGET))


class OverBudget(Exception):
    """A memory message's dups would take the sampler past its fd budget."""


#: What a new memory message of a connection makes obsolete among its queued ones.
SUPERSEDES: dict[int, frozenset[int]] = {
    FE.SET_MEM_TABLE: frozenset((FE.SET_MEM_TABLE, FE.ADD_MEM_REG)),
    FE.SET_INFLIGHT_FD: frozenset((FE.SET_INFLIGHT_FD,)),
}


class Held:
    """The dups of one queued memory message, ours until the sampler's thread claims them
    (``fds`` None: claimed, or closed because superseded)."""

    __slots__ = ("fds", "request", "superseded")

    def __init__(self, request: int, fds: list[int]) -> None:
        self.request = request
        self.fds: list[int] | None = fds
        self.superseded = False


class FdBudget:
    """The count of fds the sampler holds (``held``) and its bound (``limit``).

    Forwarding threads :meth:`dup` and :meth:`forget`; the sampler's thread
    :meth:`claim`, :meth:`close` and :meth:`charge`.  One lock, taken once a memory
    message (rare) and once a mapping change, never per data message.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = default_budget() if limit is None else limit
        self.held = 0
        self._lock = threading.Lock()
        #: Per connection and request, its queued messages' dups (oldest first; claimed
        #: ones pruned): a message supersedes by request without passing the others.
        self._queued: dict[int, dict[int, deque[Held]]] = {}

    # -- forwarding threads ---------------------------------------------------------------
    def dup(self, conn: int, request: int, fds: list[int]) -> Held:
        """Dups of ``fds`` for a memory message of ``conn`` about to be queued.

        Raises OverBudget (nothing made) past the budget, OSError if a dup fails.
        """
        with self._lock:
            queued = self._queued.get(conn)
            if queued is not None:
                for obsolete in SUPERSEDES.get(request, ()):
                    for old in queued.pop(obsolete, ()):
                        self._drop(old)
            if self.held + len(fds) > self.limit:
                raise OverBudget
            self.held += len(fds)
        dups: list[int] = []
        try:
            for fd in fds:
                dups.append(os.dup(fd))
        except OSError:
            self.close(dups)
            with self._lock:
                self.held -= len(fds) - len(dups)
            raise
        held = Held(request, dups)
        with self._lock:
            queue = self._queued.setdefault(conn, {}).setdefault(request, deque())
            while queue and queue[0].fds is None:  # (claimed in order: a prefix)
                queue.popleft()
            queue.append(held)
        return held

    def _drop(self, held: Held) -> None:
        """(lock held) Close ``held``'s dups; the sampler skips its message."""
        if held.fds is not None:
            close_fds(held.fds)
            self.held -= len(held.fds)
            held.fds = None
            held.superseded = True

    def forget(self, conn: int) -> None:
        """``conn`` closed: the dups of its messages still queued are closed now."""
        with self._lock:
            for queue in self._queued.pop(conn, {}).values():
                for held in queue:
                    self._drop(held)

    def drop(self, held: Held | None) -> None:
        """A message not taken (a full queue, the sampler stopping): its dups closed."""
        if held is not None:
            with self._lock:
                self._drop(held)

    # -- the sampler's thread -----------------------------------------------------------
    def claim(self, held: Held | None) -> list[int] | None:
        """The message's dups, now the sampler thread's (still counted); None if superseded."""
        if held is None:
            return []
        with self._lock:
            fds, held.fds = held.fds, None
        return fds

    def close(self, fds: list[int]) -> None:
        """Close dups the sampler holds and give them back."""
        if fds:
            close_fds(fds)
            self.charge(-len(fds))

    def charge(self, n: int) -> None:
        """``n`` more (or fewer) fds held: mappings, each made from a dup already counted."""
        if n:
            with self._lock:
                self.held += n
