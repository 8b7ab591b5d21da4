"""What the relay does with one message: the one decision record of rules and addons.

Rules (``rules.py``) and Python addons (``addons.py``) both end in a :class:`Verdict`,
which the proxy's relay carries out; keeping it apart lets both build one without
importing each other.  :func:`firing_note` is the one shape of the note they (and the
intercept, ``holds.py``) record before a message they acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Longest delay a rule or an addon may ask for (a stop still forwards delayed messages at once).
MAX_DELAY_S = 3600.0


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


#: Every key of a firing note besides ``text``, with its value's type (``hex``: bytes as
#: hex): who acted (``rule``, or ``addon`` and ``hook``), then what it did and the
#: ``extra`` keys its callers pass.  Readers of captures (the Wireshark dissector) show these.
FIRING_NOTE_KEYS: dict[str, str] = {
    "rule": "str",
    "addon": "str",
    "hook": "str",
    "action": "str",
    "direction": "str",
    "original": "hex",
    "new": "hex",
    "fired": "bool",
    "answer": "hex",
    "delay_s": "float",
    "error": "str",
    "hold": "int",
}


def firing_note(
    text: str,
    who: Mapping[str, object],
    action: str,
    old: bytes,
    new: bytes,
    direction: str,
    *,
    fired: bool = True,
    **extra: object,
) -> dict[str, object]:
    """The info of the note recorded before a message a rule, an addon or the intercept
    acted on (docs/capture-format.md): ``who`` acted (``rule``, or ``addon`` and ``hook``),
    the ``action``, the message before and after (hex), and ``extra`` keys (bytes as hex)."""
    info: dict[str, object] = {"text": text, **who, "action": action}
    if direction:
        info["direction"] = direction
    info["original"] = old.hex()
    info["new"] = new.hex()
    if not fired:
        info["fired"] = False
    unknown = extra.keys() - FIRING_NOTE_KEYS.keys()
    if unknown:  # a new key must be listed above, or readers will not show it
        raise ValueError(f"firing_note: keys not in FIRING_NOTE_KEYS: {sorted(unknown)}")
    for k, v in extra.items():
        if v is not None:
            info[k] = v.hex() if isinstance(v, bytes) else v
    return info
