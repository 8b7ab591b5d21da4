"""Decode a payload by walking a layout table: bytes in, a dict and problems out.

Pure functions with no session state; what they need to know about the
negotiated state (byte order, device type, packed rings, Xen regions) comes in a
small :class:`DecodeContext`.  Never raises on bad input.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any

from .protocol.features import PROTOCOL_TABLE, STATUS_TABLE, bit_names, virtio_table
from .protocol.layouts import Array, Field, Layout
from .protocol.problems import Problem, problem


@dataclass(slots=True)
class DecodeContext:
    order: str = "<"  # '<' little-endian host, '>' big-endian host
    device: str | None = None
    packed: bool = False
    xen_mmap: bool = False


def _field_value(f: Field, buf: bytes, off: int, order: str) -> Any:
    (value,) = struct.unpack_from(order + f.fmt, buf, off)
    return value


def decode_vring_base(num: int, packed: bool) -> dict[str, int]:
    """Split the ring base word (PROTOCOL.md §4.1)."""
    if packed:
        return {
            "avail_idx": num & 0x7FFF,
            "avail_wrap": (num >> 15) & 1,
            "used_idx": (num >> 16) & 0x7FFF,
            "used_wrap": (num >> 31) & 1,
        }
    return {"avail_idx": num & 0xFFFF}


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
    size = 0
    counts: dict[str, int] = {}
    for f in layout.fields:
        if isinstance(f, Field):
            if size + f.size <= len(buf) and not f.is_bytes:
                counts[f.name] = _field_value(f, buf, size, order)
            size += f.size
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else counts.get(f.count)
            if n is None:
                return None
            size += min(n, f.max_count) * _item_size(f.item)
        else:  # Tail
            if f.length is None:
                return None
            n = counts.get(f.length)
            if n is None:
                return None
            size += n
    return size


def _item_size(layout: Layout) -> int:
    return sum(f.size for f in layout.fields if isinstance(f, Field))


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
            f = next((x for x in lay.fields if isinstance(x, Field) and x.name == fname), None)
            if f is None or len(buf) < f.size or _field_value(f, buf, 0, ctx.order) != want:
                continue
        need = expected_size(lay, buf, ctx.order)
        fits = need == len(buf) if lay.exact else len(buf) >= lay.fixed_size
        if not fits:
            continue
        score = rank
        if xen != ctx.xen_mmap:
            score += 100
        if _empty_array(lay, buf, ctx.order):
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


def _empty_array(layout: Layout, buf: bytes, order: str) -> bool:
    off = 0
    counts: dict[str, int] = {}
    for f in layout.fields:
        if isinstance(f, Field):
            if off + f.size <= len(buf) and not f.is_bytes:
                counts[f.name] = _field_value(f, buf, off, order)
            off += f.size
        elif isinstance(f, Array) and isinstance(f.count, str):
            return counts.get(f.count, 0) == 0
    return False


def decode_layout(
    layout: Layout, buf: bytes, ctx: DecodeContext
) -> tuple[dict[str, Any], list[Problem]]:
    """Decode ``buf`` with ``layout``; decodes what is present, reports the rest."""
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    off = _decode_fields(layout, buf, 0, ctx, out, problems)
    need = expected_size(layout, buf, ctx.order)
    if need is None and len(buf) < layout.fixed_size:  # too short to hold its own count
        problems.insert(0, problem(
            "wrong_size", f"payload is {len(buf)} bytes, {layout.name} needs at least "
            f"{layout.fixed_size}"))
    elif layout.exact and need is not None and need != len(buf):
        problems.insert(0, problem(
            "wrong_size", f"payload is {len(buf)} bytes, {layout.name} needs {need}"))
    elif not layout.exact and len(buf) < layout.fixed_size:
        problems.insert(0, problem(
            "wrong_size", f"payload is {len(buf)} bytes, {layout.name} needs at least "
            f"{layout.fixed_size}"))
    elif off < len(buf) and not any(p.code == "wrong_size" for p in problems):
        problems.append(problem("wrong_size", f"{len(buf) - off} unexpected trailing bytes"))
    return out, problems


def _decode_fields(layout: Layout, buf: bytes, off: int, ctx: DecodeContext,
                   out: dict[str, Any], problems: list[Problem]) -> int:
    for f in layout.fields:
        if isinstance(f, Field):
            if off + f.size > len(buf):
                return off
            value = _field_value(f, buf, off, ctx.order)
            off += f.size
            if f.display == "padding":
                if any(value):
                    problems.append(problem("nonzero_padding", f"{f.name} is {bytes(value).hex()}"))
                continue
            _render(f, value, ctx, out)
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else out.get(f.count, 0)
            if not isinstance(n, int):
                n = 0
            if n > f.max_count:
                problems.append(problem(
                    "bad_count", f"{f.count} = {n}, at most {f.max_count} allowed"))
                n = f.max_count
            items = []
            size = _item_size(f.item)
            for _ in range(n):
                if off + size > len(buf):
                    problems.append(problem(
                        "bad_count", f"{f.name}: {n} items announced, only {len(items)} present"))
                    break
                item: dict[str, Any] = {}
                off = _decode_fields(f.item, buf, off, ctx, item, problems)
                items.append(item)
            out[f.name] = items
        else:  # Tail
            n = len(buf) - off if f.length is None else out.get(f.length, 0)
            data = buf[off:off + n]
            if len(data) < n:
                problems.append(problem(
                    "bad_count", f"{f.length} = {n} but only {len(data)} bytes follow"))
            out[f.name] = data.hex()
            off += len(data)
    return off
