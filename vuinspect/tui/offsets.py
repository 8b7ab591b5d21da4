"""Byte ranges of decoded fields, so the hex pane can highlight what the tree selects.

Built on the walk :mod:`vuinspect.payload` decodes with
(:func:`vuinspect.layout_walk.walk`), and names each range with the key path
:func:`vuinspect.render.tree` gives the field: ``payload.regions.1.memory_size``.
Derived keys (``features_names``, ``num_name``, bitfields such as ``index`` of a
vring fd word, the split vring base) share the range of the field they come from.
"""

from __future__ import annotations

from vuinspect.layout_walk import ARRAY, FIELD, TAIL, walk
from vuinspect.message import Message
from vuinspect.protocol.layouts import ALL_LAYOUTS, VRING_BASE_KEYS, Layout
from vuinspect.protocol.requests import HEADER_SIZE

_BY_NAME = {lay.name: lay for lay in ALL_LAYOUTS}
_NAMED = ("virtio_features", "protocol_features", "status")

Range = tuple[int, int]  # [start, end) in the message bytes


def _ranges(layout: Layout, payload: bytes, order: str, out: dict[str, Range]) -> None:
    """Add the range of every field, item, array and tail present in ``payload``."""
    for kind, path, node, start, end, value in walk(layout, payload, order):
        key = "payload." + path
        if kind == FIELD:
            if value is None:  # the payload ends here
                return
            rng = (HEADER_SIZE + start, HEADER_SIZE + end)
            out[key] = rng
            if node.display == "enum":
                out[key + "_name"] = rng
            elif node.display in _NAMED:
                out[key + "_names"] = rng
            parent = key[: len(key) - len(node.name)]
            for sub, _mask in node.bitfields:
                out.setdefault(parent + sub, rng)
            if node.display == "vring_base":
                for sub in VRING_BASE_KEYS:
                    out[parent + sub] = rng
        elif kind == TAIL:
            out[key] = (HEADER_SIZE + start, HEADER_SIZE + min(end, len(payload)))
        elif kind != ARRAY:  # an item, or the end of an array: what its items cover
            out[key] = (HEADER_SIZE + start, HEADER_SIZE + end)


def field_ranges(msg: Message) -> dict[str, Range]:
    """Tree key -> byte range in ``msg.raw`` for a framed message (empty for events)."""
    if msg.is_event or msg.kind == "raw" or len(msg.raw) < HEADER_SIZE:
        return {}
    out: dict[str, Range] = {
        "header": (0, HEADER_SIZE),
        "request": (0, 4),
        "flags": (4, 8),
        "size": (8, 12),
    }
    payload = msg.raw[HEADER_SIZE:]
    if payload:
        out["payload"] = (HEADER_SIZE, len(msg.raw))
        out["payload.data"] = (HEADER_SIZE, len(msg.raw))
    layout = _BY_NAME.get(msg.layout or "")
    if layout is not None:
        _ranges(layout, payload, msg.order, out)
    return out


def range_for(ranges: dict[str, Range], key: str) -> Range | None:
    """The range of ``key`` or of its closest ancestor that has one."""
    while key:
        if key in ranges:
            return ranges[key]
        key = key.rpartition(".")[0]
    return None
