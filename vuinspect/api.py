"""The Python API: decoded messages of a capture, as ``vuinspect read`` sees them.

    import vuinspect

    for msg in vuinspect.open("captures/blk.pcapng", filter="name == SET_MEM_TABLE"):
        print(msg.frame, msg.name, msg.reply, msg.payload.get("nregions"))
        row = msg.to_dict()          # exactly one line of `vuinspect read --json`

Attribute names are the NDJSON keys and filter names (``vuinspect fields``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .filter import compile_filter
from .frames import Frame
from .message import Message
from .pipeline import Pipeline

Source = str | os.PathLike[str] | BinaryIO


def linked(pipeline: Pipeline, frames: Iterable[Frame]) -> Iterator[Message]:
    """Decode ``frames`` in order, holding each request back until its reply is seen,
    so that its ``reply_in`` is final when it is yielded (as ``read`` prints it)."""
    held: deque[Message] = deque()
    sessions = pipeline.sessions
    for msg in pipeline.run(frames):
        held.append(msg)
        while held and not _awaits_reply(sessions, held[0]):
            yield held.popleft()
    yield from held


def _awaits_reply(sessions: dict, msg: Message) -> bool:
    """Is ``msg`` a request whose reply has not been seen yet (so ``reply_in`` may change)?"""
    if msg.reply or msg.kind != "message":
        return False
    session = sessions.get(msg.conn)
    return session is not None and any(p.message is msg for p in session.pending[msg.channel])


def open(source: Source, filter: str | None = None, *,  # noqa: A001,A002 - the API's names
         device: str | None = None) -> Iterator[Message]:
    """Yield the messages (and connection events) of a capture file, in capture order.

    ``source`` is a path or a binary file object (a pcapng written by vuinspect).
    ``filter`` is an expression of the filter language (``read --filter``); a bad
    one raises :class:`vuinspect.filter.FilterError` at once.  ``device`` names
    virtio feature bits when the capture does not say (blk, net, ...).  A damaged
    capture yields every whole message before the damage, then raises
    :class:`vuinspect.capture.CaptureError`.  ``msg.to_dict()`` is the NDJSON
    object of ``vuinspect read --json``.
    """
    from .capture import CaptureReader

    predicate = compile_filter(filter) if filter and filter.strip() else None
    reader = CaptureReader(source)
    return _iterate(reader, predicate, Pipeline(device=device))


def _iterate(reader, predicate, pipeline: Pipeline) -> Iterator[Message]:  # type: ignore[no-untyped-def]
    try:
        for msg in linked(pipeline, reader):
            if predicate is None or predicate(msg):
                yield msg
    finally:
        reader.close()
    if reader.error is not None:
        raise reader.error
