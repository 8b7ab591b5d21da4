"""Byte ranges of decoded fields, so the hex pane can highlight what the tree selects.

Walks the same layout tables as :mod:`vuinspect.payload` (arrays and tails
resolved the same way) and names each range with the key path
:func:`vuinspect.render.tree` gives the field: ``payload.regions.1.memory_size``.
Derived keys (``features_names``, ``num_name``, bitfields such as ``index`` of a
vring fd word, the split vring base) share the range of the field they come from.
"""

from __future__ import annotations

import struct

from vuinspect.message import Message
from vuinspect.protocol.layouts import ALL_LAYOUTS, Array, Field, Layout, Tail
from vuinspect.protocol.requests import HEADER_SIZE

_BY_NAME = {lay.name: lay for lay in ALL_LAYOUTS}
_NAMED = ("virtio_features", "protocol_features", "status")
_VRING_BASE_KEYS = ("avail_idx", "avail_wrap", "used_idx", "used_wrap")

Range = tuple[int, int]  # [start, end) in the message bytes


def _item_size(layout: Layout) -> int:
    return sum(f.size for f in layout.fields if isinstance(f, Field))


def _walk(layout: Layout, buf: bytes, off: int, order: str, path: str,
          out: dict[str, Range], counts: dict[str, int]) -> int:
    for f in layout.fields:
        if isinstance(f, Field):
            if off + f.size > len(buf):
                return off
            rng = (HEADER_SIZE + off, HEADER_SIZE + off + f.size)
            key = f"{path}.{f.name}"
            out[key] = rng
            if f.display == "enum":
                out[key + "_name"] = rng
            elif f.display in _NAMED:
                out[key + "_names"] = rng
            for sub, _mask in f.bitfields:
                out.setdefault(f"{path}.{sub}", rng)
            if f.display == "vring_base":
                for sub in _VRING_BASE_KEYS:
                    out[f"{path}.{sub}"] = rng
            if not f.is_bytes:
                counts[f.name] = struct.unpack_from(order + f.fmt, buf, off)[0]
            off += f.size
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else counts.get(f.count, 0)
            n = min(n, f.max_count)
            size = _item_size(f.item)
            start = off
            for i in range(n):
                if off + size > len(buf):
                    break
                item_start = off
                off = _walk(f.item, buf, off, order, f"{path}.{f.name}.{i}", out, {})
                out[f"{path}.{f.name}.{i}"] = (HEADER_SIZE + item_start, HEADER_SIZE + off)
            out[f"{path}.{f.name}"] = (HEADER_SIZE + start, HEADER_SIZE + off)
        elif isinstance(f, Tail):
            n = len(buf) - off if f.length is None else counts.get(f.length, 0)
            end = min(len(buf), off + n)
            out[f"{path}.{f.name}"] = (HEADER_SIZE + off, HEADER_SIZE + end)
            off = end
    return off


def field_ranges(msg: Message) -> dict[str, Range]:
    """Tree key -> byte range in ``msg.raw`` for a framed message (empty for events)."""
    if msg.is_event or msg.kind == "raw" or len(msg.raw) < HEADER_SIZE:
        return {}
    out: dict[str, Range] = {
        "header": (0, HEADER_SIZE), "request": (0, 4), "flags": (4, 8), "size": (8, 12),
    }
    payload = msg.raw[HEADER_SIZE:]
    if payload:
        out["payload"] = (HEADER_SIZE, len(msg.raw))
        out["payload.data"] = (HEADER_SIZE, len(msg.raw))
    layout = _BY_NAME.get(msg.layout or "")
    if layout is not None:
        order = ">" if msg.big_endian else "<"
        _walk(layout, payload, 0, order, "payload", out, {})
    return out


def range_for(ranges: dict[str, Range], key: str) -> Range | None:
    """The range of ``key`` or of its closest ancestor that has one."""
    while key:
        if key in ranges:
            return ranges[key]
        key = key.rpartition(".")[0]
    return None
