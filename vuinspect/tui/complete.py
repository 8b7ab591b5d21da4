"""Tab completion for the filter bar, over :func:`vuinspect.filter.completions`.

The filter language knows its names and values (fields, payload paths, request
names, problem codes); this only works out what Tab does with them: extend
the word being typed as far as the choices agree, and list the rest.
"""

from __future__ import annotations

import re

from vuinspect import filter as flt

_WORD = re.compile(r"[A-Za-z0-9_.]*\Z")


def candidates(text: str) -> tuple[str, list[str]]:
    """(the word being typed at the end of ``text``, the names it can complete to)."""
    m = _WORD.search(text)
    word = m.group(0) if m else ""
    try:
        found = flt.completions(text)
    except Exception:  # noqa: BLE001 - completion is a convenience, never an error
        return word, []
    return word, [c for c in found if c != word and c.lower().startswith(word.lower())]


def _common(names: list[str]) -> str:
    common = names[0]
    for c in names[1:]:
        n = 0
        while n < min(len(common), len(c)) and common[n].lower() == c[n].lower():
            n += 1
        common = common[:n]
    return common


def complete(text: str) -> tuple[str, list[str]]:
    """``text`` completed as far as its choices agree, and the choices still open."""
    word, found = candidates(text)
    if not found:
        return text, []
    if len(found) == 1:
        return text[: len(text) - len(word)] + found[0] + " ", []
    common = _common(found)
    if len(common) <= len(word):
        return text, found
    return text[: len(text) - len(word)] + common, found
