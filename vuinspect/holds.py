"""Interactive intercept (the TUI's ``i``): matching messages held until the user decides.

A hold is a delay until a decision.  The relay keeps a held message in its backlog
exactly as it keeps a delay rule's (proxy/backlog.py, ``Unsent.due``): that direction
of the link waits as for a slow peer, the other one flows.  Every HOLD_TICK_NS the
relay asks the :class:`Hold` for the user's decision (accept, edit, drop); the
decision itself comes from another thread (the engine's control channel, fed by the
TUI), so the relay never blocks on it and the TUI never touches a socket.

Every step is a note in the capture, like a rule firing (``rule``, ``action``,
``original``, ``new``: docs/rules.md), so ``read`` and Wireshark show it, and the TUI
learns from those notes, not from a side channel, which messages are held.

Bounds: at most MAX_HELD messages are held at once (further matches pass, with a
note); a command line is at most MAX_COMMAND bytes; a stop, a cleared filter or a
viewer that goes away accepts everything still held.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from typing import Any

from .filter import compile_filter, first_match
from .verdict import firing_note

#: How often a link holding a message looks for the decision (ns).
HOLD_TICK_NS = 20_000_000
#: Messages held at once (over all connections); beyond it matching messages pass.
MAX_HELD = 256
#: Longest control command (one JSON line; an edited payload of the largest message fits).
MAX_COMMAND = 1 << 22
#: The decisions a command may ask for.
DECISIONS = ("accept", "drop", "edit")


class Hold:
    """One held message: what the relay asks (``outcome``), what the user answers (``decide``)."""

    def __init__(
        self, number: int, owner: Intercept, channel: str, direction: str, data: bytes, msg: Any
    ) -> None:
        self.number = number
        self.owner = owner
        self.channel = channel
        self.direction = direction
        self.data = data
        self.msg = msg  # the decoded Message (for an edit's re-encoding)
        self.how: str | None = None
        self.new: bytes | None = None
        #: Note infos the relay records once it carries out the decision.
        self.notes: list[dict[str, object]] = []

    def decide(self, how: str, new: bytes | None = None, why: str = "") -> bool:
        """Set the decision once (the first one wins); False if it was decided already."""
        with self.owner.lock:
            if self.how is not None:
                return False
            self.how = how
            out = b"" if how == "drop" else self.data if new is None else new
            what = {"accept": "accepted", "drop": "dropped", "edit": "edited"}[how]
            if why:
                what += f" ({why})"
            self.notes.append(self.owner.note(self, how, what, self.data, out))
            self.owner.decided(self)
            self.new = out  # last: the relay thread acts (and records the note) once it is set
            return True

    def outcome(self, stopping: bool = False) -> bytes | None:
        """None while undecided; else the bytes to send on (b"": dropped).  A stopping
        link accepts what the user has not decided (a stop never swallows a message)."""
        if self.how is None and stopping:
            self.decide("accept", why="proxy stopped")
        return self.new


class Intercept:
    """The proxy run's intercept: the filter, the held messages, the commands that decide."""

    def __init__(self, device: str | None = None) -> None:
        self.lock = threading.RLock()
        self.device = device
        self.filter_text = ""
        self.match: Callable[..., bool] | None = None
        self.held: dict[int, Hold] = {}
        self._next = 1
        self.counts = {"hold": 0, "accept": 0, "drop": 0, "edit": 0, "passed": 0}
        self.errors: list[str] = []  # the last few bad commands (for the summary and tests)
        #: Called after the filter is set or cleared: the proxy's links start or stop
        #: judging every message (proxy_engine.with_intercept).
        self.on_change: Callable[[], None] | None = None

    @property
    def active(self) -> bool:
        return self.match is not None

    # -- the relay's side (via rules.ConnRules.judge) ------------------------------------
    def consider(
        self, channel: str, direction: str, data: bytes, msgs: list | None
    ) -> tuple[Hold | None, dict[str, object] | None]:
        """Hold ``data`` if a decoded message of it matches: (the hold, its note) or Nones."""
        match = self.match
        if match is None or not msgs:
            return None, None
        msg = first_match(match, msgs, "message")
        if msg is None:
            return None, None
        with self.lock:
            if self.match is None:  # cleared meanwhile: its release_all must not miss this one
                return None, None
            if len(self.held) >= MAX_HELD:
                self.counts["passed"] += 1
                hold = Hold(0, self, channel, direction, data, msg)
                return None, self.note(
                    hold, "hold", f"not held: {MAX_HELD} messages are held already", data, data
                ) | {"fired": False}
            hold = Hold(self._next, self, channel, direction, data, msg)
            self._next += 1
            self.held[hold.number] = hold
            self.counts["hold"] += 1
            return hold, self.note(hold, "hold", "held (waiting for a decision)", data, data)

    def note(self, hold: Hold, action: str, what: str, old: bytes, new: bytes) -> dict[str, object]:
        """A note info in the rules' shape (docs/rules.md), with the hold's number."""
        text = f"intercept #{hold.number}: {what}"
        who = {"rule": f"intercept: {self.filter_text}"}
        return firing_note(text, who, action, old, new, hold.direction, hold=hold.number)

    def decided(self, hold: Hold) -> None:
        self.held.pop(hold.number, None)
        if hold.how is not None:
            self.counts[hold.how] += 1

    # -- the user's side (the control channel) -------------------------------------------
    def set_filter(self, text: str) -> None:
        """Hold what matches ``text`` from now on; an empty text stops and releases all.

        Raises FilterError for a filter that does not compile (nothing changes then).
        """
        text = text.strip()
        match = compile_filter(text) if text else None
        with self.lock:
            was = self.match is not None
            self.filter_text = text
            self.match = match
        if (match is not None) != was and self.on_change is not None:
            self.on_change()
        if match is None:
            self.release_all("intercept cleared")

    def release_all(self, why: str = "") -> int:
        """Accept every held message (``A``, a cleared filter, the viewer gone, a stop)."""
        with self.lock:
            holds = list(self.held.values())
        return sum(h.decide("accept", why=why) for h in holds)

    def decide(self, number: int, how: str, payload: dict[str, Any] | None = None) -> str | None:
        """Decide held message ``number``; returns why it could not be done, or None."""
        with self.lock:
            hold = self.held.get(number)
        if hold is None:
            return f"no held message #{number}"
        if how == "edit":
            try:
                new = reencode(hold.msg, hold.data, payload or {})
            except Exception as exc:  # noqa: BLE001 - a payload the tables cannot encode: told
                return f"#{number}: cannot encode the edited payload: {exc}"
            return None if hold.decide("edit", new) else f"#{number} was decided already"
        return None if hold.decide(how) else f"#{number} was decided already"

    def command(self, line: bytes | str) -> str | None:
        """One control line (JSON): ``{"cmd": "set-intercept", "filter": F}``,
        ``accept``/``drop`` with ``id``, ``edit`` with ``id`` and ``payload``,
        ``accept-all``.  Returns an error text, or None."""
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("not an object")
            op = cmd.get("cmd")
            if op == "set-intercept":
                self.set_filter(str(cmd.get("filter", "")))
                return None
            if op == "accept-all":
                self.release_all("accept all")
                return None
            if op in DECISIONS:
                number = cmd.get("id")
                payload = cmd.get("payload")
                if not isinstance(number, int) or (op == "edit" and not isinstance(payload, dict)):
                    raise ValueError(
                        f"{op} needs an integer id" + (" and a payload" * (op == "edit"))
                    )
                return self.decide(number, op, payload)
            raise ValueError(f"unknown command {op!r}")
        except Exception as exc:  # noqa: BLE001 - a bad command is reported, never fatal
            text = f"bad intercept command: {exc}"[:300]
            self.errors = [*self.errors[-9:], text]
            return text

    def summary(self) -> str:
        c = self.counts
        return (
            f"intercept: {c['hold']} held, {c['accept']} accepted, {c['edit']} edited, "
            f"{c['drop']} dropped"
        )


def reencode(msg: Any, data: bytes, payload: dict[str, Any]) -> bytes:
    """``data`` with its payload replaced by ``payload`` (the decoder's dict shape),
    re-encoded by the same tables as an addon's change (addons.AddonMessage.encoded)."""
    from .addons import AddonMessage

    am = AddonMessage(msg, data)
    original = copy.deepcopy(msg.payload)
    am.payload = copy.deepcopy(payload)
    return am.encoded(original)
