"""Search and save over the model's rows, off the UI thread (no Textual here).

A search text that compiles in the filter language is matched as a filter;
anything else is looked up case-insensitively in the rows' summary lines, the
way termshark searches the packet list.  A text shaped like a filter
(``field == value``) that does not compile is a typo the prompt reports
(:func:`filter_shaped`), not words to look for.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable

from vuinspect.capture import CaptureWriter
from vuinspect.filter import FilterError, compile_filter, first_match
from vuinspect.message import Message
from vuinspect.render import summary_line

from .model import Model

Matcher = Callable[[list[Message]], bool]

# a word, then a comparison (symbol, or a word operator between spaces), then a value
_FILTER_SHAPE = re.compile(
    r"[A-Za-z_][\w.]*\s*(?:==|!=|<=|>=|<|>|~|\s(?:eq|ne|lt|le|gt|ge|contains|matches)\s)"
    r"\s*[\"'\w]",
    re.IGNORECASE,
)


def filter_shaped(text: str) -> bool:
    """Whether ``text`` reads as a filter (``nmae == GET_FEATURES``), so that an error
    compiling it is a typo to show, while plain words (``kick -> call``) stay text."""
    return _FILTER_SHAPE.search(text) is not None


def matcher(text: str) -> tuple[Matcher, str]:
    """A row matcher for ``text`` and how it matches ("filter" or "text")."""
    try:
        pred = compile_filter(text)
    except FilterError:
        needle = text.lower()

        def by_text(msgs: list[Message]) -> bool:
            return any(needle in summary_line(m).lower() for m in msgs)

        return by_text, "text"

    def by_filter(msgs: list[Message]) -> bool:
        return first_match(pred, msgs) is not None

    return by_filter, "filter"


def search(
    model: Model, text: str, start: int, forward: bool = True, cancel: threading.Event | None = None
) -> tuple[int | None, bool]:
    """(view position of the next match after ``start``, wrapped around) or (None, False)."""
    match, _ = matcher(text)
    n = len(model)
    if n == 0:
        return None, False
    step = 1 if forward else -1
    for i in range(1, n + 1):
        if cancel is not None and cancel.is_set():
            return None, False
        pos = (start + step * i) % n
        if match(model.messages(model.row_at(pos))):
            wrapped = pos <= start if forward else pos >= start
            return pos, wrapped
    return None, False


def save_rows(model: Model, rows: Iterable[int], path: str) -> int:
    """Write the frames of ``rows`` plus their connections' open/close events to ``path``.

    The connection events keep labels, device types and endings in the saved
    capture, so it decodes (and reads in Wireshark) like the original.  Comments
    set in the TUI replace the frames' own.
    """
    wanted = sorted(set(rows))
    conns = {model.frame(r).conn for r in wanted}
    keep = set(wanted)
    count = 0
    with CaptureWriter(path) as w:
        for r in range(len(model.source)):
            frame = model.frame(r)
            if r in keep or (frame.kind in ("open", "close") and frame.conn in conns):
                if r in model.comments:
                    frame = dataclasses.replace(frame, comment=model.comments[r] or None)
                w.write(frame)
                count += 1
    return count
