"""Frames to pcapng blocks (docs/capture-format.md), shared by CaptureWriter and the proxy.

Blocks are packed by hand: dpkt's Writer forces microseconds (TECH.md §3), and
the proxy encodes on its forwarding threads, where every µs is on the way of a
reply.  Each frame becomes one bytes object, so a writer only ever writes whole
blocks.
"""

from __future__ import annotations

import secrets
import struct
import sys
import threading
from collections.abc import Callable

from vuinspect.capture import pseudohdr
from vuinspect.capture.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    BYTE_ORDER_MAGIC,
    EPB_DIRECTION_FLAGS,
    EPB_FLAGS,
    EPB_OVERHEAD,
    EXPORTED_PDU_PREFIX,
    IF_DESCRIPTION,
    IF_NAME,
    IF_TSRESOL,
    LINKTYPE_WIRESHARK_UPPER_PDU,
    OPT_COMMENT,
    SHB_USERAPPL,
    TSRESOL_NS,
)
from vuinspect.frames import Channel, Direction, Frame, event_info
from vuinspect.render import safe_text

PAD = (b"", b"\0", b"\0\0", b"\0\0\0")
_U64 = 1 << 64
#: An option's value is at most this long: its length is a u16.
OPTION_MAX = 0xFFFF
#: An interface name (a label a peer or a capture chose) is cut past this many bytes.
IF_NAME_MAX = 1024
#: A frame's comment is kept up to this many bytes (cut, marked "..."), so its block
#: stays far below what readers take (ours MAX_BLOCK_LEN, Wireshark 4.0 16 MiB).
COMMENT_MAX = 1 << 20


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("vuinspect")
    except Exception:  # noqa: BLE001 - not installed: any label will do
        return "dev"


def pack_block(order: str, btype: int, body: bytes) -> bytes:
    """A whole pcapng block: type, total length, ``body``, total length again."""
    blen = len(body) + 12
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def pack_options(order: str, options: list[tuple[int, bytes]]) -> bytes:
    """pcapng options, each padded to 32 bits, then the end-of-options marker."""
    out = []
    for code, value in options:
        out.append(struct.pack(order + "HH", code, len(value)) + value + PAD[-len(value) & 3])
    out.append(struct.pack(order + "HH", 0, 0))
    return b"".join(out)


def comment_options(text: str) -> list[tuple[int, bytes]]:
    """``opt_comment`` options holding ``text``, each within OPTION_MAX.

    Whole lines share an option while they fit: readers (ours, Wireshark's)
    join a packet's comments with newlines, so such a text reads back the
    same; a line longer than an option is cut at character boundaries.
    """
    pieces: list[bytes] = []
    for line in pseudohdr.shorten(text.encode("utf-8", "replace"), COMMENT_MAX).split(b"\n"):
        while len(line) > OPTION_MAX:
            cut = OPTION_MAX
            while line[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
                cut -= 1
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    options: list[tuple[int, bytes]] = []
    run: list[bytes] = []
    size = -1
    for piece in pieces:
        if run and size + 1 + len(piece) > OPTION_MAX:
            options.append((OPT_COMMENT, b"\n".join(run)))
            run, size = [], -1
        run.append(piece)
        size += 1 + len(piece)
    options.append((OPT_COMMENT, b"\n".join(run)))
    return options


def new_capture_id() -> str:
    """A run's capture id: it tells its connections apart from another run's once
    both are merged into one file (mergecap, cat; docs/capture-format.md §8)."""
    return secrets.token_hex(8)


def idb_block(
    order: str, conn: int, channel: str, label: str | None, capture_id: str | None = None
) -> bytes:
    """The interface description block of one (connection, channel).

    The label comes from a peer (a socket path) or a capture: its control characters
    are escaped, since tshark and Wireshark show the interface name as it is, and it
    is cut past IF_NAME_MAX bytes (an option holds at most 64 KiB).
    """
    name = safe_text(label) if label else f"conn {conn}"
    description = f"conn {conn} {channel}" + (f" capture {capture_id}" if capture_id else "")
    body = struct.pack(order + "HHI", LINKTYPE_WIRESHARK_UPPER_PDU, 0, 0)
    body += pack_options(
        order,
        [
            (IF_NAME, pseudohdr.shorten(name.encode("utf-8", "replace"), IF_NAME_MAX)),
            (IF_DESCRIPTION, description.encode()),
            (IF_TSRESOL, bytes([TSRESOL_NS])),
        ],
    )
    return pack_block(order, BT_IDB, body)


class Encoder:
    """pcapng blocks for vuinspect frames: the one place the capture format is packed.

    CaptureWriter writes what it returns; the proxy's Recorder calls it on the
    forwarding threads (a ``packer`` costs ~0.4 µs a frame there).  Thread-safe:
    every packet becomes one bytes object (the caller appends it whole); an
    interface's description block goes to ``emit`` under a lock, before any
    thread can use the interface.
    """

    def __init__(
        self,
        emit: Callable[[bytes], object],
        big_endian: bool = sys.byteorder == "big",
        capture_id: str | None = None,
    ) -> None:
        self._emit = emit
        #: written in the section header and every interface block, when given
        self.capture_id = capture_id
        self.big_endian = big_endian
        order = ">" if big_endian else "<"
        self._order = order
        self.head = struct.Struct(order + "7I").pack
        self.tail = struct.Struct(order + "HHIHHI").pack
        self._pack = self._epb()  # (frames that are not a lane's pass the lane's values)
        self._lock = threading.Lock()
        self._ifaces: dict[tuple[int, str], int] = {}
        self._labels: dict[int, str] = {}
        # (conn, channel, direction) -> the EPB packer of its fd-less data frames
        self._lanes: dict[tuple[int, str, str], Callable[[int, bytes], bytes]] = {}
        body = struct.pack(order + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        options = [(SHB_USERAPPL, f"vuinspect {_version()}".encode())]
        if capture_id:
            options.append((OPT_COMMENT, f"vuinspect capture {capture_id}".encode()))
        body += pack_options(order, options)
        self.shb = pack_block(order, BT_SHB, body)  # the section header every capture starts with

    def _iface(self, conn: int, channel: str) -> int:
        """The interface of (conn, channel); a new one's IDB is emitted first."""
        iface = self._ifaces.get((conn, channel))
        if iface is not None:  # (set only after its IDB went out: no lock needed to read)
            return iface
        with self._lock:
            iface = self._ifaces.get((conn, channel))
            if iface is None:
                iface = len(self._ifaces)
                self._emit(
                    idb_block(self._order, conn, channel, self._labels.get(conn), self.capture_id)
                )
                self._ifaces[(conn, channel)] = iface
            return iface

    def packer(
        self, conn: int, channel: Channel, direction: Direction
    ) -> Callable[[int, bytes], bytes]:
        """``pack(ts, data)`` for the fd-less data frames of one (conn, channel, direction).

        Built once per direction (its interface block goes out first); the proxy's
        Recorder binds it for its fast path.
        """
        pack = self._lanes.get((conn, channel, direction))
        if pack is None:
            frame = Frame(0, conn, channel, direction, b"")
            header = pseudohdr.encode_header(frame, self.big_endian)
            pack = self._lanes[(conn, channel, direction)] = self._epb(
                self._iface(conn, channel),
                EXPORTED_PDU_PREFIX + header,
                EPB_DIRECTION_FLAGS[direction],
            )
        return pack

    def data(
        self, ts: int, conn: int, channel: Channel, direction: Direction, data: bytes
    ) -> bytes:
        """One data frame without fds."""
        pack = self._lanes.get((conn, channel, direction))
        if pack is None or not 0 <= ts < _U64:
            return self.frame(Frame(ts, conn, channel, direction, data))
        return pack(ts, data)

    def frame(self, frame: Frame) -> bytes:
        """Any frame; raises ValueError for one the format cannot hold (as CaptureWriter)."""
        ts = frame.ts_ns
        if not 0 <= ts < _U64:
            raise ValueError(f"timestamp {ts} ns outside the 64-bit pcapng range")
        kind = frame.kind
        if kind == "data" and not frame.fds:
            return self.packer(frame.conn, frame.channel, frame.direction)(ts, frame.data)
        header = pseudohdr.encode_header(frame, self.big_endian)
        if kind == "open":
            label = event_info(frame).get("label")
            if isinstance(label, str) and label:
                self._labels[frame.conn] = label
        channel = frame.channel if kind == "data" else "main"
        iface = self._iface(frame.conn, channel)
        flags = EPB_DIRECTION_FLAGS[frame.direction]
        prefix = EXPORTED_PDU_PREFIX + header
        return self._pack(ts, frame.data, prefix, iface, flags, len(prefix))

    def _epb(self, iface: int = 0, prefix: bytes = b"", flags: int = 0) -> Callable[..., bytes]:
        """The one Enhanced Packet Block packer: ``pack(ts, data)`` puts ``prefix``
        (exported-PDU tags + pseudo-header) before ``data``, with the direction flags.

        What is fixed for a lane is bound as defaults (local variables: the
        fastest Python reads); ``frame`` passes them per call to one packer
        made once, so no frame builds a function.
        """

        def pack(
            ts: int,
            data: bytes,
            prefix: bytes = prefix,
            iface: int = iface,
            flags: int = flags,
            plen: int = len(prefix),
            head: Callable[..., bytes] = self.head,
            tail: Callable[..., bytes] = self.tail,
            join: Callable[[tuple[bytes, ...]], bytes] = b"".join,
        ) -> bytes:
            caplen = plen + len(data)
            pad = -caplen & 3
            blen = caplen + pad + EPB_OVERHEAD
            return join(
                (
                    head(BT_EPB, blen, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, caplen),
                    prefix,
                    data,
                    PAD[pad],
                    tail(EPB_FLAGS, 4, flags, 0, 0, blen),
                )
            )

        return pack
