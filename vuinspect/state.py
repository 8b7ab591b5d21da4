"""Per-connection protocol state as plain records (what the state views show)."""

from __future__ import annotations

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


@dataclass(slots=True)
class RequestStats:
    count: int = 0
    replies: int = 0
    latencies_us: list[float] = field(default_factory=list)
    problems: int = 0


def count_request(stats: dict[str, RequestStats], msg: Any) -> int:
    """Count ``msg`` in its request's stats (the session's, or --stats' filtered view);
    returns its number of problems."""
    key = f"{msg.channel}:{msg.name}"
    st = stats.get(key)
    if st is None:
        st = stats[key] = RequestStats()
    if msg.reply:
        st.replies += 1
        if msg.latency_us is not None:
            st.latencies_us.append(msg.latency_us)
    else:
        st.count += 1
    st.problems += len(msg.problems)
    return len(msg.problems)
