"""The one rule for showing a number in hex or in decimal; every face calls :func:`number_text`.

A payload field is shown as its layout's display hint says
(:data:`vuinspect.protocol.layouts.HEX_DISPLAYS`): addresses, offsets, masks, flag,
feature and status words and memory byte counts in hex; counts, queue sizes, indices,
numbers of queues and results in decimal, as QEMU's vhost-user trace and DPDK's
VHOST_CONFIG log print them.  A field is named as a filter names it: ``flags`` is the
header's, ``payload.flags`` the payload's, ``payload.regions.0.guest_phys_addr`` an
array item's.  Keys no layout has (data-plane records, unknown payloads) go by the words
of their name, and a name two layouts show differently (``payload.offset``) by its
message's layout when the caller gives it.
"""

from __future__ import annotations

from .dataplane.headers import HEADERS
from .protocol.layouts import ALL_LAYOUTS, HEX_DISPLAYS, VRING_BASE_KEYS, Array, Field, Layout

#: The 12-byte header: request and size in decimal, the flags word in hex.
_HEADER_HEX = {"request": False, "flags": True, "size": False}
#: Name words that say hex for a key no layout has (``avail_flags``, ``addr``).
_HEX_WORDS = frozenset({"addr", "flags", "features", "offset", "mask", "status"})


def _tables() -> tuple[dict[tuple[str, str], str], dict[str, set[str]]]:
    """(layout name, field name) -> display, and field name -> the displays it has anywhere."""
    fields: list[tuple[str, str, str]] = []
    derived: list[tuple[str, str, str]] = []  # keys read out of a field: indices, bits, bases
    for top in (*ALL_LAYOUTS, *HEADERS.values()):
        stack: list[Layout] = [top]
        while stack:  # (the tables are static; items nest one level)
            lay = stack.pop()
            for f in lay.fields:
                if isinstance(f, Array):
                    stack.append(f.item)
                elif isinstance(f, Field) and f.display != "padding":
                    fields.append((top.name, f.name, f.display))
                    derived += [(top.name, sub, "dec") for sub, _mask in f.bitfields]
                    if f.display == "vring_base":
                        derived += [(top.name, sub, "dec") for sub in VRING_BASE_KEYS]
    by_layout: dict[tuple[str, str], str] = {}
    by_name: dict[str, set[str]] = {}
    # a field wins over a key of the same name read out of another (vring_addr's flags
    # bit ``log`` and its ``log`` address: the payload's ``log`` is the address)
    for layout, name, display in fields + derived:
        if by_layout.setdefault((layout, name), display) == display:
            by_name.setdefault(name, set()).add(display)
    return by_layout, by_name


_BY_LAYOUT, _BY_NAME = _tables()


def display_of(field: str, layout: str | None = None) -> str:
    """The display hint of ``field`` (``hex``, ``size``, ``dec`` ...), by the tables."""
    if not field.startswith("payload."):
        return "hex" if _HEADER_HEX.get(field, False) else "dec"
    name = field.rpartition(".")[2]
    if name.isdigit():  # ``payload.regions.0``: an item of an array of numbers
        name = field.split(".")[-2]
    if layout is not None:
        found = _BY_LAYOUT.get((layout, name))
        if found is not None:
            return found
    shown = _BY_NAME.get(name)
    if shown is not None and len({d in HEX_DISPLAYS for d in shown}) == 1:
        return next(iter(shown))
    return "hex" if _HEX_WORDS.intersection(name.split("_")) else "dec"


def is_hex(field: str, layout: str | None = None) -> bool:
    return display_of(field, layout) in HEX_DISPLAYS


def number_text(field: str, value: int, layout: str | None = None) -> str:
    """``value`` of ``field`` as every face shows it: ``0x1000`` or ``256`` (bools as words).

    The text reads back with ``int(text, 0)``, so the intercept form edits it as shown.
    """
    if isinstance(value, bool):
        return str(value)
    return f"{value:#x}" if is_hex(field, layout) else str(value)
