"""Sample frames and hand-packed pcapng blocks for the capture tests.

The block builders here follow the pcapng spec directly (not the code under
test), so a reader test also checks the writer's reading of the spec.
"""

from __future__ import annotations

import struct

from vuinspect.frames import Frame, event_frame

BASE_NS = 1_764_000_000_123_456_789


def mixed_frames() -> list[Frame]:
    """Several conns and channels, events, 0..253 fds, empty data, extreme timestamps."""
    frames = [
        # conn 7 sends data before any open event: its interface is named "conn 7".
        Frame(BASE_NS, 7, "main", "f2b", b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"),
        event_frame(
            "open",
            BASE_NS + 1,
            1,
            {
                "label": "/run/vhost/blk0.sock",
                "listen": "/tmp/a",
                "connect": "/tmp/b",
                "orientation": "frontend-connects",
                "byteorder": "little",
                "device": "blk",
            },
        ),
        Frame(BASE_NS + 2, 1, "main", "f2b", bytes(12), ("memfd:guest-ram size=256MiB",)),
        Frame(BASE_NS + 3, 1, "main", "b2f", b"", ()),
        Frame(
            BASE_NS + 4, 1, "backend", "b2f", bytes(range(256)) * 3, ("eventfd", "socket:[1234]")
        ),
        Frame(
            BASE_NS + 5,
            1,
            "backend",
            "f2b",
            b"x",
            tuple(f"eventfd:[{i}] \u00e9" for i in range(253)),
        ),
        event_frame(
            "open", BASE_NS + 6, 2, {"label": "/tmp/net\u00e9.sock", "byteorder": "little"}
        ),
        Frame(BASE_NS + 7, 2, "main", "f2b", b"abc", ("",)),
        event_frame("note", BASE_NS + 8, 2, {"text": "resync after garbage"}),
        Frame(2**64 - 1, 2, "main", "b2f", b"\xff" * 13),
        Frame(0, 0xFFFFFFFF, "backend", "f2b", b"\x00"),
        event_frame("close", BASE_NS + 9, 1, {"reason": "back-end closed", "by": "backend"}),
        event_frame("note", BASE_NS + 10, 1, {"text": "backend channel note"}, channel="backend"),
        # conn 7's open event comes late: its main interface keeps "conn 7", its backend one gets the label
        event_frame("open", BASE_NS + 11, 7, {"label": "/tmp/late.sock"}),
        Frame(BASE_NS + 12, 7, "backend", "b2f", b"late"),
    ]
    return frames


def small_frames(n: int, conn: int = 1) -> list[Frame]:
    """``n`` data frames on one already-open connection, alternating direction."""
    out = [event_frame("open", BASE_NS, conn, {"label": f"conn{conn}.sock"})]
    for i in range(n):
        out.append(
            Frame(
                BASE_NS + 1000 * (i + 1),
                conn,
                "main",
                "f2b" if i % 2 else "b2f",
                bytes([i % 256]) * (12 + i % 9),
                ("eventfd",) * (i % 3),
            )
        )
    return out


# -- hand-packed pcapng -----------------------------------------------------------------


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) & 3)


def block(order: str, btype: int, body: bytes) -> bytes:
    body = pad4(body)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + pad4(value)


def shb(order: str = "<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + struct.pack(order + "HH", 0, 0)
    return block(order, 0x0A0D0D0A, body)


def idb(
    order: str = "<",
    linktype: int = 252,
    tsresol: int | None = 9,
    tsoffset: int | None = None,
    name: str = "if",
) -> bytes:
    opts = option(order, 2, name.encode())
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    opts += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + opts)


def epb(order: str, iface: int, ts: int, data: bytes, flags: int | None = None) -> bytes:
    body = struct.pack(
        order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)
    ) + pad4(data)
    if flags is not None:
        body += option(order, 2, struct.pack(order + "I", flags)) + struct.pack(order + "HH", 0, 0)
    return block(order, 6, body)


def exported_pdu(name: bytes, payload: bytes, pad_name: bool = True) -> bytes:
    value = pad4(name) if pad_name else name
    return (
        struct.pack(">HH", 12, len(value))
        + value
        + (b"" if pad_name else b"\0" * (-len(name) & 3))
        + struct.pack(">HH", 0, 0)
        + payload
    )


def pseudo(
    conn: int,
    data: bytes,
    kind: int = 0,
    channel: int = 0,
    direction: int = 0,
    fds: tuple[bytes, ...] = (),
    flags: int = 0,
) -> bytes:
    """The pseudo-header as the team's table writes it, built without the module under test."""
    fdl = b"".join(struct.pack(">H", len(f)) + f for f in fds)
    return (
        b"VU"
        + bytes([1, kind])
        + struct.pack(">H", 14 + len(fdl))
        + bytes([channel, direction])
        + struct.pack(">I", conn)
        + bytes([flags, len(fds)])
        + fdl
        + data
    )
