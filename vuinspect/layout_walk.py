"""The one walk over a payload layout: decode, size checks, byte offsets and encode use it.

A layout table (:mod:`vuinspect.protocol.layouts`) says what a payload holds;
:func:`walk` says *where*: it visits the layout in wire order over a buffer and
yields one :data:`Step` per thing it meets, as dpkt walks ``__hdr__``:

``(kind, path, node, start, end, value)``

- ``FIELD``: a :class:`Field` at ``[start, end)``; ``value`` is the unpacked
  value (``bytes`` for ``Ns`` fields), or None when the buffer ends before it.
- ``ARRAY``: an :class:`Array` starts; ``[start, end)`` is the span its count
  claims (count clamped to ``max_count``), ``value`` the announced count
  (unclamped; None when the count field is absent).
- ``ITEM``: item ``value`` (its index) of the array at ``[start, end)``; its
  fields follow with paths ``<array>.<index>.<field>``.
- ``END``: the array ends; ``[start, end)`` is what its items cover, ``value``
  how many items were visited.
- ``TAIL``: a :class:`Tail` at ``[start, end)`` as claimed (by its length field,
  or the rest of the buffer); ``value`` the announced length, None for "the
  rest" or an absent length field.

Counts and lengths are read from the fields of the same layout level (an item's
fields are their own level).  Items are visited only while a whole item fits in
the buffer, and offsets follow the bytes present, so a short buffer yields short
spans, never a read past its end.  ``whole=True`` walks the structure the counts
claim regardless of the buffer's end, for building: a consumer may append a
field's bytes to ``buf`` (a bytearray) when it gets the field's step, and counts
are then read from them; it may also answer an ``ARRAY`` step with
``send(number of items)`` to walk the items it has.  ``descend=False`` skips
array items (sizes only).

No recursion: nesting is kept on an explicit stack, and every step moves
forward, so a walk is linear in the layout and the counts, which are bounded by
``max_count``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator
from typing import Any

from .protocol.layouts import Array, Field, Layout, Tail

FIELD, ARRAY, ITEM, END, TAIL = "field", "array", "item", "end", "tail"

Step = tuple[str, str, Any, int, int, Any]  # kind, path, node, start, end, value
_Entry = tuple[Field | Array | Tail, Callable[..., tuple] | None, int]

_PLANS: dict[tuple[int, str], tuple[Layout, tuple[_Entry, ...]]] = {}


def item_size(layout: Layout) -> int:
    """Bytes of one array item (items hold fixed fields)."""
    return sum(f.size for f in layout.fields if isinstance(f, Field))


def _plan(layout: Layout, order: str) -> tuple[_Entry, ...]:
    """The layout's nodes with their bound unpackers and sizes, made once per byte order."""
    key = (id(layout), order)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is layout:
        return hit[1]
    entries: list[_Entry] = []
    for f in layout.fields:
        if isinstance(f, Field):
            entries.append((f, struct.Struct(order + f.fmt).unpack_from, f.size))
        elif isinstance(f, Array):
            entries.append((f, None, item_size(f.item)))
        else:
            entries.append((f, None, 0))
    plan = tuple(entries)
    _PLANS[key] = (layout, plan)
    return plan


def walk(
    layout: Layout,
    buf: bytes | bytearray,
    order: str = "<",
    *,
    whole: bool = False,
    descend: bool = True,
) -> Generator[Step, int | None, None]:
    """Yield the steps of ``layout`` over ``buf`` (see the module text)."""
    off = 0
    # a level per layout being walked: [its entries left, path prefix, raw field values, the
    # array it is an item of or None]; an array entered: [None, "", None, its record], the
    # record being [array, path, start, items to visit, next index, item size]
    levels: list[list[Any]] = [[iter(_plan(layout, order)), "", {}, None]]
    while levels:
        entries, prefix, scope, array = levels[-1]
        for node, unpack, size in entries:  # (resumes where an array interrupted it)
            path = prefix + node.name
            if unpack is not None:  # a Field
                end = off + size
                value = unpack(buf, off)[0] if end <= len(buf) else None
                if value is not None and not node.is_bytes:
                    scope[node.name] = value
                yield FIELD, path, node, off, end, value
                if value is None and whole and end <= len(buf) and not node.is_bytes:
                    scope[node.name] = unpack(buf, off)[0]  # the consumer wrote it
                off = end
            elif isinstance(node, Array):
                n = node.count if isinstance(node.count, int) else scope.get(node.count)
                count = 0 if n is None else min(n, node.max_count)
                wanted = yield ARRAY, path, node, off, off + count * size, n
                if wanted is not None:  # a builder chose how many items it has
                    count = wanted
                if descend:
                    levels.append([None, "", None, [node, path, off, count, 0, size]])
                    break  # its items come next, then the rest of this level
                off += max(count, 0) * size
            else:  # Tail
                if node.length is None:
                    n, end = None, max(off, len(buf))
                else:
                    n = scope.get(node.length)
                    end = off if n is None else off + n
                yield TAIL, path, node, off, end, n
                off = end if whole else min(end, max(off, len(buf)))
        else:
            levels.pop()  # this level is done
            if array is None:
                continue
        # an array was entered, or one of its items is done: its next item, or its end
        array = levels[-1][3]
        node, path, start, count, i, isz = array
        if i < count and (whole or off + isz <= len(buf)):
            array[4] = i + 1
            ipath = f"{path}.{i}"
            yield ITEM, ipath, node.item, off, off + isz, i
            levels.append([iter(_plan(node.item, order)), ipath + ".", {}, array])
        else:
            levels.pop()
            yield END, path, node, start, off, i
