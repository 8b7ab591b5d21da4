"""Build vhost-user messages from field values (the inverse of the decoder).

Used to make sample captures holding every request and reply, by the in-repo
test peers, and by the fuzzers' "decode then re-encode gives the same bytes"
invariant.  Takes the decoder's own dict shape, so ``encode(decode(x)) == x``
for well-formed messages.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from typing import Any

from .layout_walk import ARRAY, END, FIELD, ITEM, walk
from .protocol.layouts import Array, Field, Layout, Tail
from .protocol.requests import FLAG_NEED_REPLY, REPLY_FLAGS, VERSION, lookup


def encode_layout(layout: Layout, values: dict[str, Any], order: str = "<") -> bytes:
    """Payload bytes for ``values`` (the decoder's dict shape); absent values encode as 0.

    An array's count field defaults to the number of items given and a tail's
    length to its byte count; the items given are encoded (a fixed count pads
    with zero items), whatever the count field says.
    """
    buf = bytearray()
    cur = _with_counts(layout, values)
    stack: list[tuple[dict[str, Any], list[Any]]] = []  # the enclosing values, the items
    steps = walk(layout, buf, order, whole=True)
    with contextlib.suppress(StopIteration):  # the walk's end
        step = next(steps)
        while True:
            kind, _path, node, _start, _end, value = step
            wanted = None
            if kind == FIELD:
                buf += _encode_field(node, cur, order)
            elif kind == ARRAY:
                items = cur.get(node.name, [])
                stack.append((cur, items))
                wanted = node.count if isinstance(node.count, int) else len(items)
            elif kind == ITEM:
                items = stack[-1][1]
                cur = _with_counts(node, items[value] if value < len(items) else {})
            elif kind == END:
                cur = stack.pop()[0]
            else:  # TAIL
                buf += bytes.fromhex(cur.get(node.name, ""))
            step = steps.send(wanted)  # an array learns how many items there are
    return bytes(buf)


def _with_counts(layout: Layout, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the counts and lengths it leaves to be worked out."""
    values = dict(values)
    for f in layout.fields:
        if isinstance(f, Array) and isinstance(f.count, str):
            values.setdefault(f.count, len(values.get(f.name, [])))
        if isinstance(f, Tail) and f.length:
            values.setdefault(f.length, len(bytes.fromhex(values.get(f.name, ""))))
    return values


def _encode_field(f: Field, values: dict[str, Any], order: str) -> bytes:
    if f.display == "padding":
        return bytes(f.size)
    if f.is_bytes:
        v = values.get(f.name)
        if v is None:
            return bytes(f.size)
        if f.display == "uuid":
            raw = uuid.UUID(v).bytes
        elif f.display == "mac":
            raw = bytes(int(x, 16) for x in v.split(":"))
        else:
            raw = bytes.fromhex(v) if isinstance(v, str) else bytes(v)
        return raw.ljust(f.size, b"\0")[: f.size]
    value = values.get(f.name)
    if value is None:
        # compose from bitfields, or from an Array count
        value = 0
        for sub, mask in f.bitfields:
            shift = (mask & -mask).bit_length() - 1
            value |= (int(values.get(sub, 0)) << shift) & mask
    return struct.pack(order + f.fmt, value)


def header(request: int, flags: int, size: int, order: str = "<") -> bytes:
    return struct.pack(order + "III", request, flags, size)


def message(
    request: int,
    payload: bytes = b"",
    *,
    reply: bool = False,
    need_reply: bool = False,
    flags: int | None = None,
    order: str = "<",
) -> bytes:
    """Header + payload bytes; flags default to 0x1 (request), 0x9 (need_reply) or 0x5."""
    if flags is None:
        flags = REPLY_FLAGS if reply else VERSION | (FLAG_NEED_REPLY if need_reply else 0)
    return header(request, flags, len(payload), order) + payload


def build(
    channel: str,
    request: int,
    values: dict[str, Any] | None = None,
    *,
    reply: bool = False,
    need_reply: bool = False,
    layout: str | None = None,
    order: str = "<",
) -> bytes:
    """A whole message from field values, using the spec's layout for it."""
    spec = lookup(channel, request)
    if spec is None:
        raise KeyError(f"no request {request} on channel {channel}")
    layouts = spec.reply if reply else spec.request
    chosen = next((lay for lay in layouts if layout is None or lay.name == layout), None)
    payload = encode_layout(chosen, values or {}, order) if chosen else b""
    return message(request, payload, reply=reply, need_reply=need_reply, order=order)
