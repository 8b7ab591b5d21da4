"""A capture's ring/notify JSON checked once, as it is read (``frames.event_info``).

A file can say anything, so every value of a wrong type or range is dropped and its
key path listed under ``invalid`` (``["resolved.duration_ns"]``): the text, the TUI
rows, the stats and the diagnosis then see only sane values, and
``RingSample.from_json`` still calls the sample bad.  The rules are the Lua
dissector's (``wireshark.fields.dataplane_keys``, from the same key tables): top-level
``*_ns`` times are u64, other top-level numbers u32; nested numbers u64; booleans are
no numbers; a list is a list and the items of a list of records are objects.  A file's
``resolved`` (the diagnoses a sample ends: the reader adds them) is dropped and named
under ``invalid`` too, so a capture cannot fake the end of a stall.  Keys the
tables do not name, and nulls (no value: ``"indirect_table": null``), are kept (their
consumers check them).
"""

from __future__ import annotations

from typing import Any

from ..fields import NOTIFY_KEYS, RING_KEYS

U32 = 1 << 32
U64 = 1 << 64
#: The key naming what was dropped (the file's own ``invalid`` is not kept).
INVALID = "invalid"
#: The key the reader adds to a ring record (its diagnoses ended); never taken from a file.
DERIVED = "resolved"
#: Paths listed at most (one per key path: already bounded by the tables).
MAX_INVALID = 32


def _schema(keys: dict[str, Any]) -> dict[str, str]:
    """path -> int | str | bool | list | records (a list of objects) | record (an object)."""
    out = {path: typ for path, (typ, _) in keys.items()}
    for path in keys:
        parts = path.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            out[parent] = "records" if out.get(parent) in ("list", "records") else "record"
    return out


_SCHEMAS = {"ring": _schema(RING_KEYS), "notify": _schema(NOTIFY_KEYS)}


def _fits(typ: str, value: Any, path: str) -> bool:
    if typ == "int":
        top = U64 if "." in path or path.endswith("_ns") else U32
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < top
    if typ == "str":
        return isinstance(value, str)
    if typ == "bool":
        return isinstance(value, bool)
    if typ in ("list", "records"):
        return isinstance(value, list)
    return isinstance(value, dict)  # record


def _check(
    d: dict[str, Any], prefix: str, schema: dict[str, str], invalid: dict[str, None]
) -> dict[str, Any]:
    """``d`` with the values that fit (nesting follows the schema: at most 3 deep)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = prefix + key
        typ = schema.get(path)
        if typ is None or value is None:  # (null: no value, as the sampler writes it)
            out[key] = value
        elif not _fits(typ, value, path):
            invalid[path] = None
        elif typ == "record":
            out[key] = _check(value, path + ".", schema, invalid)
        elif typ == "records":
            items = [_check(v, path + ".", schema, invalid) for v in value if isinstance(v, dict)]
            if len(items) != len(value):
                invalid[path] = None
            out[key] = items
        else:
            out[key] = value
    return out


def checked(kind: str, info: dict[str, Any]) -> dict[str, Any]:
    """A ring or notify record's JSON with only values that fit; ``invalid`` lists the rest."""
    schema = _SCHEMAS.get(kind)
    if schema is None:
        return info
    invalid: dict[str, None] = {}
    info.pop(INVALID, None)
    if info.pop(DERIVED, None) is not None:
        # the diagnoses a sample ends are the reader's to say (Pipeline adds them): a
        # file's own would fake a stall's end
        invalid[DERIVED] = None
    out = _check(info, "", schema, invalid)
    if invalid:
        out[INVALID] = list(invalid)[:MAX_INVALID]
    return out
