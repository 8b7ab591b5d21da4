"""The vuinspect pseudo-header: what a capture packet says about its frame.

Every packet of a vuinspect capture carries, after the exported-PDU tags, this
small header and then the frame's bytes.  It holds what pcapng itself cannot:
the connection, the channel, the protocol direction, the event kind, the byte
order of the captured messages and a description of every fd that travelled
with the message.  The Lua dissector generator imports the constants below, so
the Python reader and the dissector can never disagree on the layout.

Layout (all integers big-endian, whatever the capture's block byte order)::

    off size field
    0   2    magic b"VU"
    2   1    version = 1
    3   1    kind: 0 data, 1 open, 2 close, 3 note, 4 ring, 5 notify (4 and 5: format
             revision 2, issue 13: a reader that predates them reports such a
             packet as damage)
    4   2    hdr_len: length of this header including the fd list
    6   1    channel: 0 main, 1 backend
    7   1    direction: 0 f2b, 1 b2f
    8   4    conn (u32)
    12  1    flags: bit 0 = message bytes are big-endian; others 0
    13  1    nfds (0..253)
    14  ...  nfds x (u16 length + UTF-8 fd description)
    hdr_len  the frame's data (vhost-user message bytes, or event JSON)
"""

from __future__ import annotations

import struct

from vuinspect.frames import CHANNELS, DIRECTIONS, KINDS, Frame
from vuinspect.protocol.requests import SCM_MAX_FD

MAGIC = b"VU"
VERSION = 1
FIXED_LEN = 14
#: Most fds one sendmsg can carry on Linux.
MAX_FDS = SCM_MAX_FD
#: hdr_len is a u16, so the fd list must fit below this.
MAX_HDR_LEN = 0xFFFF

KIND_DATA, KIND_OPEN, KIND_CLOSE, KIND_NOTE, KIND_RING, KIND_NOTIFY = 0, 1, 2, 3, 4, 5
CHANNEL_MAIN, CHANNEL_BACKEND = 0, 1
DIRECTION_F2B, DIRECTION_B2F = 0, 1
#: flags bit 0: the message bytes are in big-endian order (host order of the capturing host).
FLAG_BIG_ENDIAN = 0x01

KIND_CODES: dict[str, int] = {
    "data": KIND_DATA,
    "open": KIND_OPEN,
    "close": KIND_CLOSE,
    "note": KIND_NOTE,
    "ring": KIND_RING,
    "notify": KIND_NOTIFY,
}
CHANNEL_CODES: dict[str, int] = {"main": CHANNEL_MAIN, "backend": CHANNEL_BACKEND}
DIRECTION_CODES: dict[str, int] = {"f2b": DIRECTION_F2B, "b2f": DIRECTION_B2F}
# Code -> name, indexable by the byte read from a header.
KIND_NAMES = KINDS
CHANNEL_NAMES = CHANNELS
DIRECTION_NAMES = DIRECTIONS

#: Fixed part after the magic: version, kind, hdr_len, channel, direction, conn, flags, nfds.
FIXED = struct.Struct(">2sBBHBBIBB")
_U16 = struct.Struct(">H")

assert FIXED.size == FIXED_LEN
assert tuple(KIND_CODES) == KINDS and tuple(CHANNEL_CODES) == CHANNELS
assert tuple(DIRECTION_CODES) == DIRECTIONS


class PseudoHeaderError(ValueError):
    """A pseudo-header that cannot be encoded or decoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fd_list(fds: tuple[str, ...]) -> bytes:
    """Encode the fd descriptions, shortening them only if hdr_len would overflow.

    Descriptions are for humans; losing the tail of an absurdly long one is
    better than refusing to record the message.
    """
    if len(fds) > MAX_FDS:
        raise PseudoHeaderError(f"{len(fds)} fds: at most {MAX_FDS} fit (SCM_MAX_FD)")
    encoded = [fd.encode("utf-8", "replace") for fd in fds]
    total = sum(len(e) for e in encoded) + 2 * len(encoded)
    if FIXED_LEN + total > MAX_HDR_LEN:
        limit = (MAX_HDR_LEN - FIXED_LEN) // len(encoded) - 2
        encoded = [shorten(e, limit) for e in encoded]
    return b"".join(_U16.pack(len(e)) + e for e in encoded)


def shorten(text: bytes, limit: int) -> bytes:
    """Cut UTF-8 ``text`` to at most ``limit`` bytes on a character boundary, marked with '...'."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)].decode("utf-8", "ignore").encode()
    return cut + b"..."


def encode_header(frame: Frame, big_endian: bool = False) -> bytes:
    """Encode the pseudo-header alone (the frame's data follows it in a packet)."""
    try:
        kind = KIND_CODES[frame.kind]
        channel = CHANNEL_CODES[frame.channel]
        direction = DIRECTION_CODES[frame.direction]
    except KeyError as exc:
        raise PseudoHeaderError(
            f"frame has unknown kind/channel/direction {exc.args[0]!r}"
        ) from None
    if not 0 <= frame.conn <= 0xFFFFFFFF:
        raise PseudoHeaderError(f"conn {frame.conn} does not fit in 32 bits")
    flags = FLAG_BIG_ENDIAN if big_endian else 0
    if not frame.fds:
        return FIXED.pack(MAGIC, VERSION, kind, FIXED_LEN, channel, direction, frame.conn, flags, 0)
    fd_list = _fd_list(frame.fds)
    return (
        FIXED.pack(
            MAGIC,
            VERSION,
            kind,
            FIXED_LEN + len(fd_list),
            channel,
            direction,
            frame.conn,
            flags,
            len(frame.fds),
        )
        + fd_list
    )


def encode(frame: Frame, big_endian: bool = False) -> bytes:
    """Encode ``frame`` (minus its timestamp) as pseudo-header + data."""
    return encode_header(frame, big_endian) + frame.data


def decode(buf: bytes | bytearray | memoryview, ts_ns: int = 0) -> tuple[Frame, bool]:
    """Decode pseudo-header + data into ``(Frame, big_endian)``.

    The timestamp is not part of the header; it comes from the capture block,
    so the caller passes it in (``0`` otherwise).
    """
    n = len(buf)
    if n < FIXED_LEN:
        raise PseudoHeaderError(f"pseudo-header cut short: {n} of {FIXED_LEN} bytes")
    magic, version, kind, hdr_len, channel, direction, conn, flags, nfds = FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise PseudoHeaderError(f"bad pseudo-header magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PseudoHeaderError(
            f"unsupported pseudo-header version {version} (this reader knows {VERSION})"
        )
    if kind >= len(KIND_NAMES):
        raise PseudoHeaderError(f"unknown frame kind {kind}")
    if channel >= len(CHANNEL_NAMES):
        raise PseudoHeaderError(f"unknown channel {channel}")
    if direction >= len(DIRECTION_NAMES):
        raise PseudoHeaderError(f"unknown direction {direction}")
    if hdr_len < FIXED_LEN or hdr_len > n:
        raise PseudoHeaderError(f"pseudo-header length {hdr_len} outside {FIXED_LEN}..{n}")
    if nfds > MAX_FDS:
        raise PseudoHeaderError(f"{nfds} fds: at most {MAX_FDS} allowed")
    fds: tuple[str, ...] = ()
    if nfds:
        fds = _decode_fds(buf, nfds, hdr_len)
    elif hdr_len != FIXED_LEN:
        raise PseudoHeaderError(f"pseudo-header length {hdr_len} but no fds (expected {FIXED_LEN})")
    frame = Frame(
        ts_ns,
        conn,
        CHANNEL_NAMES[channel],
        DIRECTION_NAMES[direction],
        bytes(buf[hdr_len:]),
        fds,
        KIND_NAMES[kind],
    )
    return frame, bool(flags & FLAG_BIG_ENDIAN)


def decode_cut(buf: bytes | bytearray | memoryview, ts_ns: int = 0) -> tuple[Frame, int] | None:
    """Decode what a snap length left of a packet: ``(Frame, hdr_len)``, or None if too little.

    The fixed part must be whole and valid (else PseudoHeaderError, as
    :func:`decode`); an fd list cut short keeps the descriptions that are
    whole; the data is whatever follows (possibly nothing).
    """
    if len(buf) < FIXED_LEN:
        return None
    magic, version, kind, hdr_len, channel, direction, conn, _, nfds = FIXED.unpack_from(buf, 0)
    if len(buf) >= hdr_len:
        frame, _ = decode(buf, ts_ns)
        return frame, hdr_len
    if (
        magic != MAGIC
        or version != VERSION
        or kind >= len(KIND_NAMES)
        or channel >= len(CHANNEL_NAMES)
        or direction >= len(DIRECTION_NAMES)
        or hdr_len < FIXED_LEN
        or nfds > MAX_FDS
    ):
        raise PseudoHeaderError("pseudo-header of a cut packet is not valid")
    fds = []
    pos = FIXED_LEN
    for _ in range(nfds):
        if pos + 2 > len(buf):
            break
        (size,) = _U16.unpack_from(buf, pos)
        if pos + 2 + size > len(buf):
            break
        fds.append(bytes(buf[pos + 2 : pos + 2 + size]).decode("utf-8", "replace"))
        pos += 2 + size
    frame = Frame(
        ts_ns,
        conn,
        CHANNEL_NAMES[channel],
        DIRECTION_NAMES[direction],
        b"",
        tuple(fds),
        KIND_NAMES[kind],
    )
    return frame, hdr_len


def _decode_fds(buf: bytes | bytearray | memoryview, nfds: int, hdr_len: int) -> tuple[str, ...]:
    """Walk the fd list, checking that it ends exactly at ``hdr_len``."""
    pos = FIXED_LEN
    out = []
    for i in range(nfds):
        if pos + 2 > hdr_len:
            raise PseudoHeaderError(f"fd list overruns pseudo-header length {hdr_len} at fd {i}")
        (size,) = _U16.unpack_from(buf, pos)
        pos += 2
        if pos + size > hdr_len:
            raise PseudoHeaderError(f"fd {i} description overruns pseudo-header length {hdr_len}")
        out.append(bytes(buf[pos : pos + size]).decode("utf-8", "replace"))
        pos += size
    if pos != hdr_len:
        raise PseudoHeaderError(f"fd list ends at {pos}, pseudo-header length says {hdr_len}")
    return tuple(out)
