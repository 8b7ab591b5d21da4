"""The one framing rule of vhost-user, sans-IO: where the whole messages of a byte run are.

A message is a 12-byte header whose last u32 is the payload size, then that
many bytes.  :func:`cut_messages` applies this to a buffer and says where it
had to stop; the layers above decide what a stop means:

* the proxy (:mod:`vuinspect.proxy.framing`) forwards each span with its fds
  and, at a header above its own forwarding limit, passes bytes through;
* the decoder (:mod:`vuinspect.decoder`) resynchronises on the next
  plausible header and reports the skipped bytes;
* the TUI frames one captured frame alone through the decoder's framer.

The Wireshark dissector mirrors it (``runtime_frames.lua``, with the limit
:data:`~vuinspect.protocol.requests.MAX_PAYLOAD` emitted from ``protocol/``).
Every caller passes its limit: the decoder the protocol's, the proxy its larger one.
"""

from __future__ import annotations

import struct

from .protocol.requests import HEADER_SIZE, SIZE_OFFSET

#: The header (request, flags, size) and its size field, per byte order ('=' is the host's).
HEADER: dict[str, struct.Struct] = {o: struct.Struct(o + "III") for o in ("<", ">", "=")}
_SIZE = {o: struct.Struct(o + "I") for o in ("<", ">", "=")}
#: The header in the host's order: what a live peer sends (the proxy's rules, addons, peers).
HOST_HEADER = HEADER["="]

Span = tuple[int, int]


def one_message(data: bytes | bytearray, order: str = "<") -> tuple[int, int, int] | None:
    """The header ``(request, flags, size)`` when ``data`` is exactly one message, else None.

    A frame the sender wrote as one message keeps its framing whatever the size
    (the proxy forwards messages whole up to its own, larger limit).
    """
    if len(data) < HEADER_SIZE:
        return None
    head: tuple[int, int, int] = HEADER[order].unpack_from(data, 0)
    return head if len(data) == HEADER_SIZE + head[2] else None


def cut_messages(
    buf: bytes | bytearray,
    limit: int,
    order: str = "<",
    start: int = 0,
    most: int | None = None,
) -> tuple[list[Span], int, int | None]:
    """The whole messages in ``buf[start:]``: ``(spans, rest, over)``.

    ``spans`` are the ``(start, end)`` offsets of each complete message, in
    order; ``rest`` is the offset of the first byte in none of them.  ``over``
    is the size announced by the header at ``rest`` when it exceeds ``limit``
    (framing cannot go on there), else None: ``buf[rest:]`` is then the start
    of an incomplete message, or empty.  One pass, no copies.  ``most`` stops
    after that many spans (a caller walking a huge buffer in batches; a full
    batch means more may follow at ``rest``).
    """
    unpack = _SIZE[order].unpack_from
    end = len(buf)
    spans: list[Span] = []
    pos = start
    while end - pos >= HEADER_SIZE and (most is None or len(spans) < most):
        size = unpack(buf, pos + SIZE_OFFSET)[0]
        if size > limit:
            return spans, pos, size
        stop = pos + HEADER_SIZE + size
        if stop > end:
            break
        spans.append((pos, stop))
        pos = stop
    return spans, pos, None
