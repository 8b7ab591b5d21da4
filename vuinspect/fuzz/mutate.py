"""Mutators: real-looking input in, damaged input out, reproducibly from one ``random.Random``.

Three levels, as the input reaches vuinspect at three levels:

* bytes (:func:`mutate_bytes`): bit flips, interesting integers, inserted,
  deleted and repeated ranges, cuts;
* frames (:func:`mutate_frames`, :func:`resplit`): what a back-end or a capture
  may hand the decoder: damaged headers and sizes, garbage between messages,
  wrong fd counts, frames split or glued anywhere, events in odd places;
* pcapng blocks (:func:`mutate_capture`): random, cut, repeated, swapped and
  corrupted blocks, for the capture reader.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Callable

from vuinspect.capture import CaptureWriter
from vuinspect.capture.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_ISB,
    BT_NRB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    SHB_MAGIC,
    shb_order,
)
from vuinspect.frames import (
    CHANNELS,
    DIRECTIONS,
    Channel,
    Direction,
    Frame,
    Kind,
    event_frame,
)
from vuinspect.protocol.requests import HEADER_SIZE, MAX_PAYLOAD, SCM_MAX_FD

#: 32-bit values that find off-by-ones and overflows in length and count fields.
INTERESTING_U32 = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    11,
    12,
    13,
    16,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFF,
    0x1000,
    MAX_PAYLOAD - 1,
    MAX_PAYLOAD,
    MAX_PAYLOAD + 1,
    0xFFFF,
    0x10000,
    0x10001,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
)
#: Header flags worth trying: valid request/reply/need_reply, bad versions, reserved bits.
INTERESTING_FLAGS = (
    0x0,
    0x1,
    0x2,
    0x3,
    0x5,
    0x9,
    0xD,
    0x4,
    0x8,
    0x11,
    0x101,
    0x80000001,
    0xFFFFFFFF,
)
#: Texts a peer or a capture may choose (labels, notes, close reasons, fd descriptions,
#: comments): terminal escapes, C1, bidi overrides and isolates, line separators, NUL,
#: markup, and a long one.  No output may show them raw (check.py).
HOSTILE_TEXTS = (
    "\x1b]0;TITLE\x07\x1b[2J",
    "\x1b[31mred\x1b[0m\r\n     99 forged line",
    "\x9b31m\x9d0;x\x9c\x85",
    "abc\u202edcba\u2066x\u2069\u200f",
    "a\u2028b\u2029c\x00d\x7f",
    "[bold red]markup[/] [/nope]",
    "\ufffd" + "\x1b" * 3000,
)


# -- bytes ------------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: random.Random, ops: int | None = None) -> bytes:
    """Apply 1-4 random byte-level mutations."""
    buf = bytearray(data)
    for _ in range(ops if ops is not None else rng.randint(1, 4)):
        rng.choice(_BYTE_OPS)(buf, rng)
    return bytes(buf)


def _flip(buf: bytearray, rng: random.Random) -> None:
    if buf:
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)


def _set_byte(buf: bytearray, rng: random.Random) -> None:
    if buf:
        buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))


def _set_u32(buf: bytearray, rng: random.Random) -> None:
    if len(buf) >= 4:
        i = rng.randrange(0, len(buf) - 3)
        if rng.random() < 0.7:
            i &= ~3
        order = rng.choice("<>")
        struct.pack_into(order + "I", buf, i, rng.choice(INTERESTING_U32))


def _insert(buf: bytearray, rng: random.Random) -> None:
    i = rng.randint(0, len(buf))
    buf[i:i] = rng.randbytes(rng.choice((1, 2, 4, 12, rng.randint(1, 64))))


def _delete(buf: bytearray, rng: random.Random) -> None:
    if buf:
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randint(1, 16)]


def _repeat(buf: bytearray, rng: random.Random) -> None:
    if buf:
        i = rng.randrange(len(buf))
        j = min(len(buf), i + rng.randint(1, 64))
        buf[j:j] = buf[i:j]


def _cut(buf: bytearray, rng: random.Random) -> None:
    if buf:
        del buf[rng.randrange(len(buf)) :]


_BYTE_OPS: tuple[Callable[[bytearray, random.Random], None], ...] = (
    _flip,
    _flip,
    _set_byte,
    _set_u32,
    _set_u32,
    _insert,
    _delete,
    _repeat,
    _cut,
)


# -- frames -----------------------------------------------------------------------
def resplit(frames: list[Frame], rng: random.Random, *, max_pieces: int = 6) -> list[Frame]:
    """Cut data frames at random points and glue neighbours of the same stream.

    A frame's fds go with its last piece, as the kernel hands fds to the
    read holding the last byte of the write that carried them (TECH.md §5).
    """
    out: list[Frame] = []
    for f in frames:
        if f.kind != "data" or not f.data:
            out.append(f)
            continue
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.kind == "data"
            and not prev.fds
            and rng.random() < 0.3
            and (prev.conn, prev.channel, prev.direction) == (f.conn, f.channel, f.direction)
        ):
            out[-1] = dataclasses.replace(f, data=prev.data + f.data)
            continue
        n = rng.randint(1, max_pieces)
        cuts = sorted(rng.sample(range(1, len(f.data)), min(n - 1, len(f.data) - 1)))
        bounds = [0, *cuts, len(f.data)]
        for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            fds = f.fds if k == len(bounds) - 2 else ()
            out.append(dataclasses.replace(f, data=f.data[a:b], fds=fds))
    return out


def byte_at_a_time(frames: list[Frame]) -> list[Frame]:
    """Every data byte its own frame (fds on the last byte of their frame)."""
    out: list[Frame] = []
    for f in frames:
        if f.kind != "data" or len(f.data) <= 1:
            out.append(f)
            continue
        n = len(f.data)
        out.extend(
            dataclasses.replace(f, data=f.data[i : i + 1], fds=f.fds if i == n - 1 else ())
            for i in range(n)
        )
    return out


def mutate_frames(frames: list[Frame], rng: random.Random, ops: int | None = None) -> list[Frame]:
    """Apply 1-4 frame-level mutations (the result may also be re-split)."""
    out = list(frames)
    for _ in range(ops if ops is not None else rng.randint(1, 4)):
        if not out:
            out.append(_garbage_frame(rng, 1, "main", "f2b"))
        rng.choice(_FRAME_OPS)(out, rng)
    if rng.random() < 0.3:
        out = resplit(out, rng)
    return out


def _data_index(frames: list[Frame], rng: random.Random) -> int | None:
    idx = [i for i, f in enumerate(frames) if f.kind == "data"]
    return rng.choice(idx) if idx else None


def _garbage_frame(rng: random.Random, conn: int, channel: Channel, direction: Direction) -> Frame:
    kind = rng.random()
    if kind < 0.4:
        data = rng.randbytes(rng.randint(1, 40))
    elif kind < 0.8:  # a header, maybe lying about its size, maybe with a short payload
        size = rng.choice(INTERESTING_U32)
        body = rng.randbytes(min(size, rng.randint(0, 80)))
        data = struct.pack("<III", rng.randint(0, 50), rng.choice(INTERESTING_FLAGS), size) + body
    else:  # the largest payloads, just inside and just outside the maximum
        size = rng.choice((MAX_PAYLOAD, MAX_PAYLOAD + 1, MAX_PAYLOAD - 1))
        data = struct.pack("<III", rng.randint(0, 50), 0x1, size) + rng.randbytes(
            rng.choice((size, size // 2, size + 5))
        )
    fds = tuple(f"eventfd#{k}" for k in range(rng.choice((0, 0, 1, 3))))
    return Frame(rng.randint(0, 1 << 62), conn, channel, direction, data, fds)


def _op_flip_data(frames: list[Frame], rng: random.Random) -> None:
    i = _data_index(frames, rng)
    if i is not None:
        frames[i] = dataclasses.replace(frames[i], data=mutate_bytes(frames[i].data, rng))


def _op_header_field(frames: list[Frame], rng: random.Random) -> None:
    i = _data_index(frames, rng)
    if i is None or len(frames[i].data) < HEADER_SIZE:
        return
    buf = bytearray(frames[i].data)
    which = rng.randrange(3)
    value = rng.choice(INTERESTING_FLAGS if which == 1 else INTERESTING_U32)
    if which == 0 and rng.random() < 0.5:
        value = rng.randint(0, 60)
    struct.pack_into("<I", buf, 4 * which, value)
    frames[i] = dataclasses.replace(frames[i], data=bytes(buf))


def _op_insert_garbage(frames: list[Frame], rng: random.Random) -> None:
    ref = frames[rng.randrange(len(frames))]
    pos = rng.randint(0, len(frames))
    frames.insert(pos, _garbage_frame(rng, ref.conn, ref.channel, ref.direction))


def _op_delete(frames: list[Frame], rng: random.Random) -> None:
    del frames[rng.randrange(len(frames))]


def _op_duplicate(frames: list[Frame], rng: random.Random) -> None:
    i = rng.randrange(len(frames))
    frames.insert(i, frames[i])


def _op_truncate(frames: list[Frame], rng: random.Random) -> None:
    i = _data_index(frames, rng)
    if i is not None and frames[i].data:
        f = frames[i]
        frames[i] = dataclasses.replace(f, data=f.data[: rng.randrange(len(f.data))])


def _op_fds(frames: list[Frame], rng: random.Random) -> None:
    """Wrong fd counts: add some (up to the kernel's 253), drop some, move them."""
    i = _data_index(frames, rng)
    if i is None:
        return
    f = frames[i]
    r = rng.random()
    if r < 0.4:
        fds = f.fds + tuple(
            f"memfd:extra{k} size=4KiB" for k in range(rng.choice((1, 2, 8, SCM_MAX_FD)))
        )
    elif r < 0.7:
        fds = f.fds[: rng.randint(0, len(f.fds))] if f.fds else ("truncated",)
    else:
        fds = ()
        j = _data_index(frames, rng)
        if j is not None and j != i:
            frames[j] = dataclasses.replace(frames[j], fds=frames[j].fds + f.fds)
    frames[i] = dataclasses.replace(f, fds=fds[:SCM_MAX_FD])


def _op_reroute(frames: list[Frame], rng: random.Random) -> None:
    i = _data_index(frames, rng)
    if i is not None:
        frames[i] = dataclasses.replace(
            frames[i],
            channel=rng.choice(CHANNELS),
            direction=rng.choice(DIRECTIONS),
            conn=rng.choice((frames[i].conn, frames[i].conn + 1, 0, 0xFFFFFFFF)),
        )


def _op_event(frames: list[Frame], rng: random.Random) -> None:
    """Open, close and note events where they do not belong, some damaged."""
    ref = frames[rng.randrange(len(frames))]
    pos = rng.randint(0, len(frames))
    r = rng.random()
    if r < 0.35:
        info = {
            "label": "x",
            "byteorder": rng.choice(("little", "big", "middle")),
            "device": rng.choice(("blk", "net", "nope", None)),
        }
        ev = event_frame("open", ref.ts_ns, ref.conn, info)
    elif r < 0.7:
        ev = event_frame("close", ref.ts_ns, ref.conn, {"reason": "fuzz"}, rng.choice(CHANNELS))
    else:
        ev = Frame(
            ref.ts_ns,
            ref.conn,
            "main",
            "f2b",
            rng.choice((b"", b"{", b"[1,2]", b"\xff\xfe", b'{"reason": 5}', b"null")),
            (),
            rng.choice(("open", "close", "note")),
        )
    frames.insert(pos, ev)


_TEXT_KEYS: tuple[tuple[Kind, str], ...] = (
    ("open", "label"),
    ("note", "text"),
    ("close", "reason"),
)


def _op_hostile_text(frames: list[Frame], rng: random.Random) -> None:
    """A text a peer or capture chose: in an event, an fd description or a comment."""
    text = rng.choice(HOSTILE_TEXTS)
    r = rng.random()
    i = _data_index(frames, rng)
    if r < 0.3 and i is not None:
        frames[i] = dataclasses.replace(frames[i], fds=(f"memfd:{text} size=4KiB", *frames[i].fds))
        frames[i] = dataclasses.replace(frames[i], fds=frames[i].fds[:SCM_MAX_FD])
        return
    if r < 0.45 and i is not None:
        frames[i] = dataclasses.replace(frames[i], comment=text)
        return
    ref = frames[rng.randrange(len(frames))]
    kind: Kind
    kind, key = rng.choice(_TEXT_KEYS)
    info: dict[str, object] = {key: text}
    if rng.random() < 0.5:
        info[rng.choice(("by", "rule", "orientation", "device", text))] = text
    frames.insert(rng.randint(0, len(frames)), event_frame(kind, ref.ts_ns, ref.conn, info))


_FRAME_OPS: tuple[Callable[[list[Frame], random.Random], None], ...] = (
    _op_flip_data,
    _op_flip_data,
    _op_header_field,
    _op_header_field,
    _op_insert_garbage,
    _op_delete,
    _op_duplicate,
    _op_truncate,
    _op_fds,
    _op_reroute,
    _op_event,
    _op_hostile_text,
)


# -- pcapng blocks ----------------------------------------------------------------------
def capture_bytes(frames: list[Frame], *, big_endian: bool = False) -> bytes:
    """A capture of ``frames`` written by the real writer, in memory."""
    import io

    buf = io.BytesIO()
    w = CaptureWriter(buf, big_endian=big_endian)
    for f in frames:
        w.write(f)
    w.close()
    return buf.getvalue()


_BLOCK_TYPES = (BT_IDB, BT_PB, BT_SPB, BT_NRB, BT_ISB, BT_EPB)


def blocks(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each whole block, walking until something does not fit."""
    out: list[tuple[int, int]] = []
    pos = 0
    order = "<"
    while pos + 12 <= len(data):
        if data[pos : pos + 4] == SHB_MAGIC:
            order = shb_order(data, pos) or "<"
        blen = struct.unpack_from(order + "I", data, pos + 4)[0]
        if blen < 12 or blen % 4 or pos + blen > len(data):
            break
        out.append((pos, blen))
        pos += blen
    return out


def mutate_capture(data: bytes, rng: random.Random, ops: int | None = None) -> bytes:
    """Apply 1-3 block-aware or byte-level mutations to a pcapng file."""
    for _ in range(ops if ops is not None else rng.randint(1, 3)):
        data = rng.choice(_CAPTURE_OPS)(data, rng)
    return data


def _cap_bytes(data: bytes, rng: random.Random) -> bytes:
    bl = blocks(data)
    if not bl or rng.random() < 0.3:
        return mutate_bytes(data, rng)
    off, blen = rng.choice(bl)  # confine the damage to one block
    return data[:off] + mutate_bytes(data[off : off + blen], rng) + data[off + blen :]


def _cap_cut(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randint(0, len(data))]


def _random_block(rng: random.Random) -> bytes:
    btype = rng.choice((*_BLOCK_TYPES, 0xBAD, BT_SHB, rng.getrandbits(32)))
    body = rng.randbytes(rng.choice((0, 4, 16, 20, rng.randrange(0, 200, 4))))
    blen = 12 + len(body)
    declared = blen if rng.random() < 0.7 else rng.choice(INTERESTING_U32)
    trailer = blen if rng.random() < 0.8 else rng.choice(INTERESTING_U32)
    return struct.pack("<II", btype, declared) + body + struct.pack("<I", trailer)


def _cap_insert_block(data: bytes, rng: random.Random) -> bytes:
    bl = blocks(data)
    at = rng.choice([off + blen for off, blen in bl] or [len(data)])
    return data[:at] + _random_block(rng) + data[at:]


def _cap_block_edit(data: bytes, rng: random.Random) -> bytes:
    """Delete, repeat or swap whole blocks, or lie in one's length fields."""
    bl = blocks(data)
    if len(bl) < 2:
        return data
    i, j = sorted(rng.sample(range(len(bl)), 2))
    (oi, li), (oj, lj) = bl[i], bl[j]
    r = rng.random()
    if r < 0.25:
        return data[:oi] + data[oi + li :]
    if r < 0.5:
        return data[:oj] + data[oi : oi + li] + data[oj:]
    if r < 0.75:
        return (
            data[:oi]
            + data[oj : oj + lj]
            + data[oi + li : oj]
            + data[oi : oi + li]
            + data[oj + lj :]
        )
    buf = bytearray(data)
    where = oi + (4 if rng.random() < 0.6 else li - 4)
    struct.pack_into("<I", buf, where, rng.choice(INTERESTING_U32))
    return bytes(buf)


def _cap_splice_section(data: bytes, rng: random.Random) -> bytes:
    """A second section, maybe in the other byte order, maybe with foreign link types."""
    from vuinspect.samples import device_start

    frames = device_start()[: rng.randint(1, 8)]
    other = capture_bytes(frames, big_endian=rng.random() < 0.5)
    if rng.random() < 0.3:  # turn its interfaces into Ethernet
        buf = bytearray(other)
        for off, _ in blocks(other):
            if buf[off : off + 4] in (b"\x01\x00\x00\x00", b"\x00\x00\x00\x01"):
                buf[off + 8 : off + 10] = b"\x00\x01" if buf[off] == 0 else b"\x01\x00"
        other = bytes(buf)
    return data + other


_CAPTURE_OPS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _cap_bytes,
    _cap_bytes,
    _cap_bytes,
    _cap_cut,
    _cap_insert_block,
    _cap_block_edit,
    _cap_block_edit,
    _cap_splice_section,
)
