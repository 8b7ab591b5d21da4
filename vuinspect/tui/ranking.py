"""The sessions in the order the Connections and State views page them, kept up to date.

Sorting every session on each refresh cost 0.09 s at 50,000 connections under the
model's lock.  A session changes rank only when a frame of its connection is decoded
(a message, a reply, a problem, its close), so the model marks those connections and a
refresh re-ranks only them: a page costs the page, not the whole history.
No Textual here: the model keeps one.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from itertools import islice

from vuinspect.session import Session

RANKS = 4


def rank(s: Session) -> int:
    """Where a session goes when not all fit: 0 waits on a reply now, 1 has problems or left a
    request unanswered, 2 is open, 3 the rest: the broken one is on the first page."""
    owed = bool(s.owed())
    if owed and s.closed_ns is None:
        return 0
    if owed or s.problem_count or s.dataplane.problem_count:
        return 1
    return 2 if s.closed_ns is None else 3


class Ranking:
    """``sessions`` (the pipeline's dict, in its order) sorted by ``rank``, stable.

    ``dirty`` holds the connections whose sessions may have changed since the last
    look (the model adds each decoded frame's); call every method under the model's lock.
    """

    def __init__(self, sessions: dict[int, Session]) -> None:
        self.sessions = sessions
        self.dirty: dict[int, None] = {}
        self._all = True  # re-rank everything at the next look
        self._seq = 0
        self._of: dict[int, tuple[Session, int, int]] = {}  # conn -> (session, seq, rank)
        self._by_seq: dict[int, Session] = {}  # in seq order: the pipeline's order
        self._buckets: list[list[int]] = [[] for _ in range(RANKS)]  # seqs, ascending
        self._closed: set[int] = set()  # conns tracked as closed (the pipeline may forget them)

    def touch_all(self) -> None:
        self._all = True

    def __len__(self) -> int:
        self._update()
        return len(self._of)

    def page(self, start: int, count: int) -> list[Session]:
        """Sessions ``start`` to ``start + count`` of the ranked order."""
        self._update()
        out: list[Session] = []
        for bucket in self._buckets:
            if start >= len(bucket):
                start -= len(bucket)
                continue
            take = bucket[start : start + count - len(out)]
            out.extend(self._by_seq[q] for q in take)
            start = 0
            if len(out) >= count:
                break
        return out

    def index(self, conn: int) -> int | None:
        """Where connection ``conn`` is in the ranked order (None: not kept)."""
        self._update()
        entry = self._of.get(conn)
        if entry is None:
            return None
        _, seq, r = entry
        before = sum(len(b) for b in self._buckets[:r])
        return before + bisect_left(self._buckets[r], seq)

    # -- keeping up -------------------------------------------------------------------
    def _update(self) -> None:
        sessions, dirty = self.sessions, self.dirty
        if not self._all and not dirty and len(self._of) == len(sessions):
            return
        if self._all or len(dirty) > len(sessions) // 4 + 16:
            self._rebuild()
            return
        new = 0
        moved: list[tuple[int, int, int]] = []  # (seq, old rank, new rank)
        for conn in dirty:
            s = sessions.get(conn)
            entry = self._of.get(conn)
            if entry is not None and entry[0] is not s:
                self._drop(conn)
                entry = None
            if s is None:
                continue
            if entry is None:
                new += 1
                continue
            r = rank(s)
            self._note_closed(conn, s)
            if r != entry[2]:
                self._of[conn] = (s, entry[1], r)
                moved.append((entry[1], entry[2], r))
        dirty.clear()
        if len(moved) > 64 + len(self._of) // 128:  # each move shifts a list; this walks all
            self._rebucket()
        else:
            for seq, old, r in moved:
                bucket = self._buckets[old]
                del bucket[bisect_left(bucket, seq)]
                insort(self._buckets[r], seq)
        if new:  # new sessions are the dict's newest: its tail, in its order
            tail = list(islice(reversed(sessions.values()), new))[::-1]
            if any(s.conn in self._of for s in tail):
                self._rebuild()
                return
            for s in tail:
                self._add(s)
        if len(self._of) != len(sessions):  # the pipeline forgot old closed sessions
            for conn in [c for c in self._closed if sessions.get(c) is not self._of[c][0]]:
                self._drop(conn)
            if len(self._of) != len(sessions):
                self._rebuild()

    def _note_closed(self, conn: int, s: Session) -> None:
        if s.closed_ns is None:
            self._closed.discard(conn)
        else:
            self._closed.add(conn)

    def _add(self, s: Session) -> None:
        seq = self._seq
        self._seq += 1
        r = rank(s)
        self._of[s.conn] = (s, seq, r)
        self._by_seq[seq] = s
        self._buckets[r].append(seq)  # the newest seq: at the end
        self._note_closed(s.conn, s)

    def _drop(self, conn: int) -> None:
        _, seq, r = self._of.pop(conn)
        del self._by_seq[seq]
        bucket = self._buckets[r]
        del bucket[bisect_left(bucket, seq)]
        self._closed.discard(conn)

    def _rebucket(self) -> None:
        """The buckets anew from the ranks kept (many sessions moved: O(n), no rank calls)."""
        buckets: list[list[int]] = [[] for _ in range(RANKS)]
        of = self._of
        for seq, s in self._by_seq.items():
            buckets[of[s.conn][2]].append(seq)
        self._buckets = buckets

    def _rebuild(self) -> None:
        """Everything anew, in the pipeline's order."""
        self._all = False
        self.dirty.clear()
        self._of.clear()
        self._by_seq.clear()
        self._closed.clear()
        self._buckets = [[] for _ in range(RANKS)]
        for s in self.sessions.values():
            self._add(s)
