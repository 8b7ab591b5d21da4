"""One reading side of a link on the general path: its framer, and what its chunks are noted for.

The relay's fast path (relay.py) sends a chunk that is exactly one whole
message as it came.  Any other chunk comes here first: it is cut into units of
one message each with their own fds (framing.py), and what the proxy must say
about it becomes a note: fds the kernel dropped (MSG_CTRUNC), framing given up,
fds beyond what one message can carry (closed at once; a peer that keeps
sending them is cut), a peer closing mid-message.  The link then forwards the
units; nothing here sends, and the traffic is never changed.
"""

from __future__ import annotations

from collections.abc import Callable

from vuinspect.frames import Direction

from .ending import EndReason
from .fds import SCM_MAX_FD, close_all
from .framing import Framer, Unit

#: Fds beyond what one message can carry that a side may send (each closed at once) before
#: its connection is cut: a peer that keeps doing it is hoarding, not talking vhost-user.
EXCESS_FDS_CUT = 4 * SCM_MAX_FD


class Inbound:
    """The general path of one reading side (``side`` of a link; owned by the link's thread).

    ``role(side)`` names a peer for the notes, ``note(ts, text)`` emits one, and
    ``end`` is the link's end reason (a hoarding peer ends the link through it).
    """

    __slots__ = ("side", "framer", "suffix", "_role", "_note", "_end", "_lost_noted", "_excess")

    def __init__(
        self,
        side: int,
        role: Callable[[int], str],
        note: Callable[[int, str], None],
        end: EndReason,
    ) -> None:
        self.side = side
        self.framer = Framer()
        #: Added to the end text of this side (a close in the middle of a message).
        self.suffix = ""
        self._role = role
        self._note = note
        self._end = end
        self._lost_noted = False
        self._excess = 0  # fds closed because one message could not carry them

    @property
    def slow(self) -> bool:
        """Must this side's next chunk come here too (bytes of a message held, framing lost)?"""
        framer = self.framer
        return framer.pending > 0 or framer.lost is not None

    def cut(
        self, ts: int, direction: Direction, data: bytes, fds: list[int], truncated: bool
    ) -> list[Unit]:
        """One received chunk (``truncated``: MSG_CTRUNC) as units ready to send, in order."""
        if truncated:
            self._note(
                ts,
                "control data truncated (MSG_CTRUNC): the kernel dropped fds "
                f"sent by the {self._role(self.side)}; {len(fds)} fd(s) arrived",
            )
        framer = self.framer
        units = framer.feed(data, fds)
        if framer.lost is not None and not self._lost_noted:
            self._lost_noted = True
            self._note(ts, f"{direction}: {framer.lost}")
        return units

    def drop_excess(self, ts: int, direction: Direction) -> None:
        """Close the fds an incomplete message cannot carry; cut a peer that insists."""
        framer = self.framer
        if not framer.excess:
            return
        extra, framer.excess = framer.excess, []
        close_all(extra)
        self._excess += len(extra)
        total = self._excess
        who = self._role(self.side)
        if total > EXCESS_FDS_CUT:
            text = (
                f"{direction}: the {who} sent {total} fd(s) beyond the {SCM_MAX_FD} one "
                f"message can carry, before its message was complete: connection cut"
            )
            self._note(ts, text)
            self._end.end(-1, "error", text)
        self._note(
            ts,
            f"{direction}: {len(extra)} fd(s) sent by the {who} beyond the "
            f"{SCM_MAX_FD} one message can carry were closed at once: they could not "
            "be forwarded",
        )

    def rest(self, ts: int, direction: Direction | None) -> Unit | None:
        """At EOF: the incomplete message still held, to forward as it came (noted), or None.

        Fds held without bytes to carry them (or before the direction was known)
        are closed here.
        """
        rest = self.framer.flush()
        if rest is None:
            return None
        data, fds = rest
        if not data or direction is None:
            close_all(fds)
            return None
        pend = len(data)
        self._note(
            ts,
            f"{direction}: the {self._role(self.side)} closed mid-message; "
            f"forwarding the {pend} byte(s) of the incomplete message as they came",
        )
        self.suffix = f" mid-message ({pend} byte(s) of an incomplete message forwarded)"
        return rest

    def close(self) -> None:
        """The link closes: the fds of a message that never completed are ours to close."""
        close_all(self.framer.pending_fds)
