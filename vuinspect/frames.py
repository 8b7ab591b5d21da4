"""Frame records: what crossed a socket, the one currency of vuinspect.

The proxy produces them live, the capture reader produces them from a file; the
decoder, session state, capture writer, CLI and TUI consume them.  Live and
offline are therefore the same code path.

A frame of kind ``data`` holds the bytes of one ``sendmsg`` the proxy made (one
whole vhost-user message, or bytes that could not be framed) and a description
of every fd that travelled with it.  Frames of kind ``open``/``close``/``note``
are connection events; their ``data`` is UTF-8 JSON (see :func:`event_info`).
Frames of kind ``ring`` (one look at a vring through guest memory) and
``notify`` (kicks/calls/errs on one vring in a 10 ms window) are the data
plane (issue 13); their ``data`` is compact JSON too (:func:`ring_frame`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, final

Channel = Literal["main", "backend"]
Direction = Literal["f2b", "b2f"]
Kind = Literal["data", "open", "close", "note", "ring", "notify"]

CHANNELS: tuple[Channel, ...] = ("main", "backend")
DIRECTIONS: tuple[Direction, ...] = ("f2b", "b2f")
KINDS: tuple[Kind, ...] = ("data", "open", "close", "note", "ring", "notify")
#: Kinds whose data is JSON about the connection rather than bytes that crossed it.
EVENT_KINDS: frozenset[str] = frozenset(("open", "close", "note"))
DATAPLANE_KINDS: frozenset[str] = frozenset(("ring", "notify"))


@final  # (nothing subclasses it: mypy narrows on the hot paths' ``type(x) is Frame`` checks)
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
    #: pcapng ``opt_comment`` of the packet (``editcap -a``, the TUI), written back by CaptureWriter.
    comment: str | None = None
    #: Bytes of ``data`` the capture left out (a snap length cut the packet): ``data`` is a prefix.
    truncated: int = 0


def event_frame(
    kind: Kind, ts_ns: int, conn: int, info: dict[str, Any], channel: Channel = "main"
) -> Frame:
    """Build an ``open``/``close``/``note`` frame carrying ``info`` as JSON."""
    data = json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
    return Frame(ts_ns, conn, channel, "f2b", data, (), kind)


def ring_frame(ts_ns: int, conn: int, sample: dict[str, Any]) -> Frame:
    """A ``ring`` frame: one vring sample (``dataplane.RingSample.to_json()``), compact JSON."""
    return Frame(
        ts_ns, conn, "main", "f2b", json.dumps(sample, separators=(",", ":")).encode(), (), "ring"
    )


def notify_frame(
    ts_ns: int, conn: int, vring: int, signal: str, count: int, first_ns: int, last_ns: int
) -> Frame:
    """A ``notify`` frame: ``count`` kicks, calls or errs on ``vring`` in one window."""
    info = {
        "vring": vring,
        "signal": signal,
        "count": count,
        "first_ns": first_ns,
        "last_ns": last_ns,
    }
    return Frame(
        ts_ns, conn, "main", "f2b", json.dumps(info, separators=(",", ":")).encode(), (), "notify"
    )


#: Event JSON above this size is not parsed (ours is a few hundred bytes): shown as text.
MAX_EVENT_JSON = 1 << 20
#: Deepest nesting parsed (ours is 2): deeper input is shown as text, never recursed into.
MAX_EVENT_DEPTH = 32
_BRACKETS = re.compile(rb"[\[\]{}]")
# A JSON string, or an unterminated one to the end: possessive and one pass, never a
# rescan from each quote (that made 200 KB of escaped quotes take 266 s).
_STRINGS = re.compile(rb'(?s)"(?:[^"\\]|\\.)*+(?:"|\\?\Z)')
_TEXT_SHOWN = 4096


def _too_deep(data: bytes) -> bool:
    """Nesting deeper than MAX_EVENT_DEPTH?  A linear scan, only when brackets abound."""
    if data.count(b"[") + data.count(b"{") <= MAX_EVENT_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b"", data)):
        if m.group() in b"[{":
            depth += 1
            if depth > MAX_EVENT_DEPTH:
                return True
        else:
            depth -= 1
    return False


def event_info(frame: Frame) -> dict[str, Any]:
    """Decode the JSON of an event frame; never raises.

    Damaged, oversized (> MAX_EVENT_JSON) or too deeply nested JSON (a file
    can hold anything) yields ``{"text": ...}`` (cut to 4 KiB if oversized),
    so no consumer recurses on a depth the file chose; so does JSON with NaN or
    Infinity (no JSON: a strict reader of our NDJSON would fail).  A ring or
    notify record keeps only values of their type and range
    (``dataplane.records.checked``).
    """
    data = frame.data
    if len(data) > MAX_EVENT_JSON:
        return {
            "text": data[:_TEXT_SHOWN].decode("utf-8", "replace") + "...",
            "truncated": len(data),
        }
    try:
        if _too_deep(data):
            raise ValueError("nested too deep")
        info = json.loads(data.decode("utf-8", "replace"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return {"text": data.decode("utf-8", "replace")}
    info = info if isinstance(info, dict) else {"value": info}
    if frame.kind in DATAPLANE_KINDS:  # checked once here, for every consumer
        from .dataplane.records import checked  # (the data plane imports this module)

        info = checked(frame.kind, info)
    return info


def _no_constant(name: str) -> Any:
    """NaN / Infinity are no JSON (Python's extension): such a payload is malformed."""
    raise ValueError(f"{name} is not JSON")
