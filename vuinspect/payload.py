"""Decode a payload by walking a layout table: bytes in, a dict and problems out.

Pure functions with no session state; what they need to know about the
negotiated state (byte order, device type, packed rings, Xen regions) comes in a
small :class:`DecodeContext`.  Never raises on bad input.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .layout_walk import ARRAY, END, FIELD, ITEM, TAIL, walk
from .protocol.features import PROTOCOL_TABLE, STATUS_TABLE, bit_names, virtio_table
from .protocol.layouts import VRING_BASE_KEYS, Field, Layout
from .protocol.problems import Problem, problem


@dataclass(slots=True)
class DecodeContext:
    order: str = "<"  # '<' little-endian host, '>' big-endian host
    device: str | None = None
    packed: bool = False
    xen_mmap: bool = False


_AVAIL_IDX, _AVAIL_WRAP, _USED_IDX, _USED_WRAP = VRING_BASE_KEYS


def decode_vring_base(num: int, packed: bool) -> dict[str, int]:
    """Split the ring base word (PROTOCOL.md §4.1)."""
    if packed:
        return {
            _AVAIL_IDX: num & 0x7FFF,
            _AVAIL_WRAP: (num >> 15) & 1,
            _USED_IDX: (num >> 16) & 0x7FFF,
            _USED_WRAP: (num >> 31) & 1,
        }
    return {_AVAIL_IDX: num & 0xFFFF}


def _mask_shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _render(f: Field, value: Any, ctx: DecodeContext, out: dict[str, Any]) -> None:
    """Store ``value`` under ``f.name`` plus the derived keys its display implies."""
    name = f.name
    d = f.display
    if f.is_bytes:
        if d == "uuid":
            out[name] = str(uuid.UUID(bytes=bytes(value)))
        elif d == "mac":
            out[name] = ":".join(f"{b:02x}" for b in value)
        else:
            out[name] = bytes(value).hex()
        return
    out[name] = value
    if d == "enum" and f.values is not None:
        out[name + "_name"] = f.values.get(value, f"unknown({value})")
    elif d == "virtio_features":
        out[name + "_names"] = bit_names(value, virtio_table(ctx.device))
    elif d == "protocol_features":
        out[name + "_names"] = bit_names(value, PROTOCOL_TABLE)
    elif d == "status":
        out[name + "_names"] = bit_names(value & 0xFF, STATUS_TABLE)
    elif d == "vring_base":
        out.update(decode_vring_base(value, ctx.packed))
    for sub, mask in f.bitfields:
        v = (value & mask) >> _mask_shift(mask)
        out[sub] = bool(v) if mask & (mask - 1) == 0 else v


def expected_size(layout: Layout, buf: bytes, order: str) -> int | None:
    """The size ``layout`` requires for this buffer (arrays and tails resolved)."""
    return _measure(layout, buf, order)[0]


def _measure(layout: Layout, buf: bytes, order: str) -> tuple[int | None, bool]:
    """(:func:`expected_size`, whether the first counted array announces no items)."""
    size = 0
    empty: bool | None = None
    for kind, _path, node, start, end, value in walk(layout, buf, order, descend=False):
        if kind == ARRAY and empty is None and isinstance(node.count, str):
            empty = not value
        if value is None and kind in (ARRAY, TAIL):
            return None, bool(empty)  # no count to size it by, or a tail that takes the rest
        size += end - start
    return size, bool(empty)


def choose_layout(candidates: tuple[Layout, ...], buf: bytes, ctx: DecodeContext) -> Layout | None:
    """Pick the alternative that fits ``buf`` best (exact size, ``when``, Xen preference)."""
    if not candidates:
        return None
    best: tuple[int, Layout] | None = None
    names = {lay.name for lay in candidates}
    for rank, lay in enumerate(candidates):
        xen = "xen" in lay.name
        if not xen and lay.name + "_xen" not in names:
            xen = ctx.xen_mmap  # no Xen twin: the negotiation does not matter
        if lay.when is not None:
            fname, want = lay.when
            held = next(
                (
                    value
                    for kind, path, _n, _s, _e, value in walk(lay, buf, ctx.order, descend=False)
                    if kind == FIELD and path == fname
                ),
                None,
            )
            if held != want:
                continue
        need, empty_array = _measure(lay, buf, ctx.order)
        fits = need == len(buf) if lay.exact else len(buf) >= lay.fixed_size
        if not fits:
            continue
        score = rank
        if xen != ctx.xen_mmap:
            score += 100
        if empty_array:  # a worse fit than a twin that has items
            score += 50
        if best is None or score < best[0]:
            best = (score, lay)
    if best is not None:
        return best[1]
    # nothing fits: the first non-Xen (or Xen, as negotiated) alternative, flagged by the caller
    for lay in candidates:
        if ("xen" in lay.name) == ctx.xen_mmap and lay.when is None:
            return lay
    return candidates[0]


def decode_layout(
    layout: Layout, buf: bytes, ctx: DecodeContext
) -> tuple[dict[str, Any], list[Problem]]:
    """Decode ``buf`` with ``layout``; decodes what is present, reports the rest."""
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    off = _decode_fields(layout, buf, ctx, out, problems)
    need = expected_size(layout, buf, ctx.order)
    if need is None and len(buf) < layout.fixed_size:  # too short to hold its own count
        problems.insert(
            0,
            problem(
                "wrong_size",
                f"payload is {len(buf)} bytes, {layout.name} needs at least {layout.fixed_size}",
            ),
        )
    elif layout.exact and need is not None and need != len(buf):
        problems.insert(
            0, problem("wrong_size", f"payload is {len(buf)} bytes, {layout.name} needs {need}")
        )
    elif not layout.exact and len(buf) < layout.fixed_size:
        problems.insert(
            0,
            problem(
                "wrong_size",
                f"payload is {len(buf)} bytes, {layout.name} needs at least {layout.fixed_size}",
            ),
        )
    elif off < len(buf) and not any(p.code == "wrong_size" for p in problems):
        problems.append(problem("wrong_size", f"{len(buf) - off} unexpected trailing bytes"))
    return out, problems


def _decode_fields(
    layout: Layout, buf: bytes, ctx: DecodeContext, out: dict[str, Any], problems: list[Problem]
) -> int:
    """Render what ``buf`` holds into ``out``; returns the offset after the last part decoded."""
    off = 0
    cur = out
    arrays: list[tuple[dict[str, Any], list[dict[str, Any]], int]] = []  # parent, items, wanted
    for kind, _path, node, start, end, value in walk(layout, buf, ctx.order):
        if kind == FIELD:
            if value is None:  # the buffer ends here: decode what is present
                break
            off = end
            if node.display == "padding":
                if any(value):
                    problems.append(problem("nonzero_padding", f"{node.name} is {value.hex()}"))
                continue
            _render(node, value, ctx, cur)
        elif kind == ITEM:
            cur = {}
            arrays[-1][1].append(cur)
        elif kind == ARRAY:
            n = value if isinstance(value, int) else 0
            if n > node.max_count:
                problems.append(
                    problem("bad_count", f"{node.count} = {n}, at most {node.max_count} allowed")
                )
                n = node.max_count
            items: list[dict[str, Any]] = []
            cur[node.name] = items
            arrays.append((cur, items, n))
        elif kind == END:
            cur, items, n = arrays.pop()
            if len(items) < n:
                problems.append(
                    problem(
                        "bad_count", f"{node.name}: {n} items announced, only {len(items)} present"
                    )
                )
            off = end
        else:  # TAIL
            data = buf[start:end]
            if len(data) < end - start:
                problems.append(
                    problem(
                        "bad_count",
                        f"{node.length} = {end - start} but only {len(data)} bytes follow",
                    )
                )
            cur[node.name] = data.hex()
            off = start + len(data)
    return off
