"""Frame records: what crossed a socket, the one currency of vuinspect.

The proxy produces them live, the capture reader produces them from a file; the
decoder, session state, capture writer, CLI and TUI consume them.  Live and
offline are therefore the same code path.

A frame of kind ``data`` holds the bytes of one ``sendmsg`` the proxy made (one
whole vhost-user message, or bytes that could not be framed) and a description
of every fd that travelled with it.  Frames of kind ``open``/``close``/``note``
are connection events; their ``data`` is UTF-8 JSON (see :func:`event_info`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Channel = Literal["main", "backend"]
Direction = Literal["f2b", "b2f"]
Kind = Literal["data", "open", "close", "note"]

CHANNELS: tuple[Channel, ...] = ("main", "backend")
DIRECTIONS: tuple[Direction, ...] = ("f2b", "b2f")
KINDS: tuple[Kind, ...] = ("data", "open", "close", "note")


@dataclass(slots=True)
class Frame:
    """One record of traffic or of a connection event; treat it as immutable.

    (Not ``frozen=True``: a frozen dataclass costs ~1 µs more to build, and the
    proxy builds one per forwarded message on its forwarding threads.)

    ``direction`` is relative to the protocol roles, not to who connected:
    ``f2b`` is front-end (QEMU) to back-end, ``b2f`` the reverse, on either
    channel.  ``fds`` are human descriptions like ``memfd:guest-ram size=256MiB``
    (``strace -yy`` style), never the fd numbers themselves.
    """

    ts_ns: int
    conn: int
    channel: Channel
    direction: Direction
    data: bytes
    fds: tuple[str, ...] = ()
    kind: Kind = "data"


def event_frame(
    kind: Kind, ts_ns: int, conn: int, info: dict[str, Any], channel: Channel = "main"
) -> Frame:
    """Build an ``open``/``close``/``note`` frame carrying ``info`` as JSON."""
    data = json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
    return Frame(ts_ns, conn, channel, "f2b", data, (), kind)


def event_info(frame: Frame) -> dict[str, Any]:
    """Decode the JSON of an event frame; a damaged one yields ``{"text": ...}``."""
    try:
        info = json.loads(frame.data.decode("utf-8", "replace"))
    except ValueError:
        return {"text": frame.data.decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {"value": info}
