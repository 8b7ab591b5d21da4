"""The Python API: decoded messages of a capture, as ``vuinspect read`` sees them.

    import vuinspect

    for msg in vuinspect.open("captures/blk.pcapng", filter="name == SET_MEM_TABLE"):
        print(msg.frame, msg.name, msg.reply, msg.payload.get("nregions"))
        row = msg.to_dict()          # exactly one line of `vuinspect read --json`

Attribute names are the NDJSON keys and filter names (``vuinspect fields``).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from .filter import compile_filter
from .message import Message
from .pipeline import Pipeline, linked

Source = str | os.PathLike[str] | BinaryIO


class Concat:
    """Several pcapng files as one byte stream, like ``cat a b | vuinspect read -``: each
    file is a new section, so the reader gives each its own origin (distinct conns)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.sizes = [os.path.getsize(p) for p in paths]
        self.name = paths[0]
        self._i = -1
        self._file: Any = None
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._file is None:
                if self._i + 1 >= len(self.paths):
                    return b""
                self._i += 1
                self.name = self.paths[self._i]
                self._file = builtins.open(self.name, "rb", buffering=0)  # noqa: SIM115 - closed by read, close
            data = self._file.read(n if n and n > 0 else 1 << 20)
            if data:
                self.position += len(data)
                return data
            self._file.close()
            self._file = None

    def where(self, offset: int) -> tuple[str, int]:
        """(file, offset in it) of an offset in the stream."""
        for path, size in zip(self.paths, self.sizes, strict=True):
            if offset < size:
                return path, offset
            offset -= size
        return self.paths[-1], offset + self.sizes[-1]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def is_pcapng(path: str) -> bool:
    from .capture.pcapng import SHB_MAGIC

    with builtins.open(path, "rb") as f:
        return f.read(4) == SHB_MAGIC


def open(
    source: Source | list[str],
    filter: str | None = None,
    *,  # the API's names
    device: str | None = None,
) -> Iterator[Message]:
    """Yield the messages (and connection events) of a capture file, in capture order.

    ``source`` is a path or a binary file object (a pcapng written by vuinspect), or
    a list of paths read in sequence as one capture (each file its own origin, so
    their connection numbers stay apart).
    ``filter`` is an expression of the filter language (``read --filter``); a bad
    one raises :class:`vuinspect.filter.FilterError` at once.  ``device`` names
    virtio feature bits when the capture does not say (blk, net, ...).  A damaged
    capture yields every whole message before the damage, then raises
    :class:`vuinspect.capture.CaptureError`.  ``msg.to_dict()`` is the NDJSON
    object of ``vuinspect read --json``.
    """
    from .capture import CaptureReader

    predicate = compile_filter(filter) if filter and filter.strip() else None
    stream: Concat | None = None
    src: Source
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        if len(paths) > 1:
            stream = Concat(paths)
        # the reader uses only read() and name of a file object, which Concat has
        src = cast(BinaryIO, stream) if stream is not None else paths[0]
    else:
        src = source
    reader = CaptureReader(src)
    return _iterate(reader, predicate, Pipeline(device=device), stream)


def _iterate(
    reader: Any, predicate: Any, pipeline: Pipeline, stream: Concat | None
) -> Iterator[Message]:
    try:
        for msg in linked(pipeline, reader):
            if predicate is None or predicate(msg):
                yield msg
    finally:
        reader.close()
        if isinstance(stream, Concat):
            stream.close()
    if reader.error is not None:
        raise reader.error
