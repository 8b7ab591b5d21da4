"""What the relay does with one message: the one decision record of rules and addons.

Rules (``rules.py``) and Python addons (``addons.py``) both end in a :class:`Verdict`,
which the proxy's relay carries out; keeping it apart lets both build one without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Verdict:
    """What the relay does with one message.

    ``data`` is what goes on (None: nothing: dropped, answered or cut);
    ``reply`` a message the proxy sends back to the sender; ``end`` cuts the
    connection; ``notes`` are the note infos to record before the message;
    ``hold`` (holds.Hold) keeps it in the relay's backlog until the user decides.
    """

    data: bytes | None
    delay_s: float = 0.0
    reply: bytes | None = None
    end: str | None = None
    notes: list[dict[str, object]] = field(default_factory=list)
    hold: Any = None
