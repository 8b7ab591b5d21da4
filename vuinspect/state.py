"""Per-connection protocol state as plain records (what the state views show)."""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Region:
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    fd: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "guest_phys_addr": self.guest_phys_addr,
            "memory_size": self.memory_size,
            "userspace_addr": self.userspace_addr,
            "mmap_offset": self.mmap_offset,
            "fd": self.fd,
        }


@dataclass(slots=True)
class Vring:
    index: int
    num: int | None = None
    base: int | None = None
    desc: int | None = None
    used: int | None = None
    avail: int | None = None
    log: int | None = None
    log_enabled: bool = False
    kick: str | None = None
    call: str | None = None
    err: str | None = None
    enabled: bool | None = None
    started: bool = False
    stopped_base: int | None = None  # base returned by the last GET_VRING_BASE

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


#: Requests kept waiting for a reply per connection and channel; past it the oldest is
#: given up with missing_reply (a front-end flooding requests its back-end never answers
#: must not grow the queue, nor a reply's scan over it).  The Lua dissector uses the same.
MAX_PENDING = 4096


@dataclass(slots=True)
class Pending:
    """A request that still owes its reply."""

    message: Any  # vuinspect.message.Message (kept loose to avoid an import cycle)
    since_ns: int
    expected: bool  # False: a reply may come, but the state does not demand one

    @property
    def waiter(self) -> str:
        return "front-end" if self.message.channel == "main" else "back-end"

    @property
    def owner(self) -> str:
        return "back-end" if self.message.channel == "main" else "front-end"


class Latencies:
    """Reply latencies (µs) of one request kind, in bounded memory.

    Exact up to :attr:`EXACT` values (a capture of a few thousand replies gets exact
    percentiles); past that, every value goes to a log histogram of 1 % buckets, so a
    day-long session holds a few thousand numbers, not one per reply, and a percentile
    is off by at most 1 %.  ``n`` and ``max`` stay exact.
    """

    EXACT = 4096
    _STEP = math.log(1.01)
    __slots__ = ("_buckets", "_exact", "max", "n")

    def __init__(self) -> None:
        self.n = 0
        self.max: float | None = None
        self._exact: list[float] | None = []
        self._buckets: dict[int, list[float]] = {}  # key -> [count, smallest value seen]

    def add(self, value: float) -> None:
        self.n += 1
        if self.max is None or value > self.max:
            self.max = value
        exact = self._exact
        if exact is not None:
            exact.append(value)
            if len(exact) > self.EXACT:
                self._exact = None
                for v in exact:
                    self._bucket(v)
            return
        self._bucket(value)

    def _bucket(self, value: float) -> None:
        # every value <= 1 µs shares one bucket (no log of 0 or of a clock step backwards)
        key = math.floor(math.log(value) / self._STEP) if value > 1.0 else -1
        slot = self._buckets.get(key)
        if slot is None:
            self._buckets[key] = [1, value]
        else:
            slot[0] += 1
            slot[1] = min(slot[1], value)

    def merge(self, other: Latencies) -> None:
        if self._exact is not None and other._exact is not None:
            for v in other._exact:
                self.add(v)
            return
        self.n += other.n
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if self._exact is not None:
            values, self._exact = self._exact, None
            for v in values:
                self._bucket(v)
        if other._exact is not None:
            for v in other._exact:
                self._bucket(v)
            return
        for key, (count, low) in other._buckets.items():
            slot = self._buckets.setdefault(key, [0, low])
            slot[0] += count
            slot[1] = min(slot[1], low)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..100); None when empty."""
        if not self.n:
            return None
        rank = max(1, -(-self.n * q // 100))  # ceil(n*q/100), at least 1
        if self._exact is not None:
            return sorted(self._exact)[int(rank) - 1]
        seen = 0
        for key in sorted(self._buckets):
            count, low = self._buckets[key]
            seen += int(count)
            if seen >= rank:
                return low
        return self.max


@dataclass(slots=True)
class RequestStats:
    count: int = 0
    replies: int = 0
    problem_count: int = 0
    #: made with the first reply latency: most request kinds have none, and an object per
    #: kind per connection is what a long read's garbage collector walks (issue 16's bench)
    _latencies: Latencies | None = field(default=None, repr=False)

    @property
    def problems(self) -> int:
        """Old name of :attr:`problem_count`, read-only (a number: Message.problems is the list)."""
        warnings.warn(
            "RequestStats.problems is RequestStats.problem_count", DeprecationWarning, stacklevel=2
        )
        return self.problem_count

    @property
    def latencies_us(self) -> Latencies:
        """The reply latencies (µs) of this request kind."""
        lat = self._latencies
        if lat is None:
            lat = self._latencies = Latencies()
        return lat


#: Request kinds counted apart (every known one fits many times over); past it, a peer
#: sending ever new unknown codes has them counted under OTHER_KINDS, not one entry each.
MAX_KINDS = 512
OTHER_KINDS = "OTHER_KINDS"


def count_request(stats: dict[str, RequestStats], msg: Any) -> int:
    """Count ``msg`` in its request's stats (the session's, or --stats' filtered view);
    returns its number of problems."""
    key = sys.intern(f"{msg.channel}:{msg.name}")  # (one string for every connection's entry)
    st = stats.get(key)
    if st is None:
        if len(stats) >= MAX_KINDS:  # ever new unknown request codes: counted together
            key = f"{msg.channel}:{OTHER_KINDS}"
            st = stats.get(key)
        if st is None:
            st = stats[key] = RequestStats()
    if msg.reply:
        st.replies += 1
        if msg.latency_us is not None:
            st.latencies_us.add(msg.latency_us)
    else:
        st.count += 1
    n = len(msg.problems)
    st.problem_count += n
    return n
