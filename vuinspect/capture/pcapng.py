"""pcapng as vuinspect uses it: constants, block layouts and the parsing shared by reader and index.

A vuinspect capture is plain pcapng (docs/capture-format.md): one Section
Header Block, one Interface Description Block per (connection, channel) with
link type 252 (LINKTYPE_WIRESHARK_UPPER_PDU) and nanosecond timestamps, and
one Enhanced Packet Block per frame.  Each packet is the exported-PDU tags
naming the "vhost_user" dissector, then our pseudo-header, then the bytes.

dpkt knows pcapng but its Writer forces microseconds and its Reader drops the
interface id and options (TECH.md §3), so blocks are packed and walked here
with ``struct`` directly: that is also 5-10x faster.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.frames import Frame

# Block types (pcapng spec §11.1).
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block: skipped
BT_SPB = 0x00000003  # Simple Packet Block: no interface/timestamp, skipped
BT_NRB = 0x00000004
BT_ISB = 0x00000005
BT_EPB = 0x00000006

BYTE_ORDER_MAGIC = 0x1A2B3C4D
SECTION_LENGTH_UNKNOWN = 0xFFFFFFFFFFFFFFFF

# Option codes.
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
IF_TSOFFSET = 14
EPB_FLAGS = 2
# epb_flags bits 0-1: direction.  f2b is "inbound" to the back-end, b2f "outbound".
EPB_FLAGS_INBOUND = 1
EPB_FLAGS_OUTBOUND = 2
EPB_DIRECTION_FLAGS = {"f2b": EPB_FLAGS_INBOUND, "b2f": EPB_FLAGS_OUTBOUND}

LINKTYPE_WIRESHARK_UPPER_PDU = 252
TSRESOL_NS = 9

# Exported-PDU tags (wireshark epan/exported_pdu.h); tag and length are big-endian.
EXP_PDU_TAG_END_OF_OPT = 0
EXP_PDU_TAG_DISSECTOR_NAME = 12
DISSECTOR_NAME = "vhost_user"


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _exported_pdu_prefix(name: str) -> bytes:
    """Tag 12 with the NUL-padded name and the *padded* length, then end-of-options.

    Wireshark advances by the tag length exactly, so an unpadded length would
    make it read the padding as the next tag and shift the payload (FIELD.md).
    """
    raw = name.encode()
    padded = raw.ljust(_pad4(len(raw)), b"\0")
    return (
        struct.pack(">HH", EXP_PDU_TAG_DISSECTOR_NAME, len(padded)) + padded
        + struct.pack(">HH", EXP_PDU_TAG_END_OF_OPT, 0)
    )


#: The 20 bytes that start every packet of a vuinspect capture.
EXPORTED_PDU_PREFIX = _exported_pdu_prefix(DISSECTOR_NAME)
PREFIX_LEN = len(EXPORTED_PDU_PREFIX)

#: A block longer than this is taken as a corrupt length, not buffered.
MAX_BLOCK_LEN = 64 << 20

_HDR = {"<": struct.Struct("<II"), ">": struct.Struct(">II")}
_EPB = {"<": struct.Struct("<IIII"), ">": struct.Struct(">IIII")}  # iface, ts_high, ts_low, caplen
_U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}
_TLV = struct.Struct(">HH")

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
    b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34",
}
_SHB_MAGIC = struct.pack("<I", BT_SHB)


@dataclass(slots=True)
class Interface:
    """One IDB: its link type, name and how to turn its timestamps into ns."""

    id: int
    linktype: int
    name: str = ""
    description: str = ""
    tsresol: int = 6
    ts_offset_s: int = 0
    section: int = 0
    ts_mul: int = 1000
    ts_div: int = 1
    native_ns: bool = False  # raw timestamps already are ns since the epoch
    ours: bool = field(init=False)  # link type 252: may hold vuinspect packets

    def __post_init__(self) -> None:
        self.ours = self.linktype == LINKTYPE_WIRESHARK_UPPER_PDU

    def ts_ns(self, raw: int) -> int:
        """Exact integer ns for a raw timestamp (floor when the unit is finer than 1 ns)."""
        return raw * self.ts_mul // self.ts_div + self.ts_offset_s * 1_000_000_000


def ts_scale(tsresol: int) -> tuple[int, int]:
    """(mul, div) so that ns = raw * mul // div for an if_tsresol byte."""
    units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    g = math.gcd(units, 1_000_000_000)
    return 1_000_000_000 // g, units // g


class Section:
    """The state one SHB opens: byte order, compiled structs, its interfaces."""

    __slots__ = ("index", "offset", "order", "hdr", "epb", "u32", "interfaces")

    def __init__(self, index: int, offset: int, order: str) -> None:
        self.index = index
        self.offset = offset
        self.order = order
        self.hdr = _HDR[order]
        self.epb = _EPB[order]
        self.u32 = _U32[order]
        self.interfaces: list[Interface] = []


def sniff(head: bytes) -> str | None:
    """Say in one line why ``head`` does not start a pcapng file, or None if it may."""
    if not head:
        return "empty input: no pcapng section header"
    if head[:4] == _SHB_MAGIC[: len(head[:4])]:
        return None
    if head[:4] in _PCAP_MAGICS:
        return "classic pcap (libpcap) file, not pcapng: vuinspect writes and reads pcapng only"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed file: decompress it first"
    sample = head[:32]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"text file, not a pcapng capture (starts with {text.splitlines()[0][:24]!r})"
    return f"not a pcapng capture (first bytes {head[:8].hex(' ')})"


def shb_order(buf: bytes, pos: int) -> str | None:
    """Byte order of the SHB at ``pos`` from its byte-order magic, or None if bad."""
    bom = buf[pos + 8 : pos + 12]
    if bom == b"\x4d\x3c\x2b\x1a":
        return "<"
    if bom == b"\x1a\x2b\x3c\x4d":
        return ">"
    return None


def parse_shb(buf: bytes, pos: int, blen: int, section: Section) -> None:
    """Check an SHB's version (its length and order were checked by the caller)."""
    if blen < 28:
        raise CaptureError(
            f"section header at offset {section.offset} too short ({blen} bytes)", section.offset
        )
    major, minor = struct.unpack_from(section.order + "HH", buf, pos + 12)
    if major != 1:
        raise CaptureFormatError(f"pcapng version {major}.{minor} is not supported (only 1.x)")


def iter_options(buf: bytes, start: int, end: int, order: str):
    """Yield (code, value bytes) of the options between ``start`` and ``end``."""
    hdr = struct.Struct(order + "HH")
    pos = start
    while pos + 4 <= end:
        code, size = hdr.unpack_from(buf, pos)
        pos += 4
        if code == OPT_ENDOFOPT:
            return
        if pos + size > end:
            return  # a damaged option list: keep what was read
        yield code, bytes(buf[pos : pos + size])
        pos += _pad4(size)


def parse_idb(buf: bytes, pos: int, blen: int, section: Section) -> Interface:
    """Parse an IDB into an :class:`Interface` appended to ``section``."""
    if blen < 20:
        raise CaptureError(f"interface block at offset {pos} too short ({blen} bytes)", pos)
    (linktype,) = struct.unpack_from(section.order + "H", buf, pos + 8)
    iface = Interface(len(section.interfaces), linktype, section=section.index)
    for code, value in iter_options(buf, pos + 16, pos + blen - 4, section.order):
        if code == IF_NAME:
            iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
        elif code == IF_DESCRIPTION:
            iface.description = value.rstrip(b"\0").decode("utf-8", "replace")
        elif code == IF_TSRESOL and value:
            iface.tsresol = value[0]
        elif code == IF_TSOFFSET and len(value) == 8:
            (iface.ts_offset_s,) = struct.unpack(section.order + "q", value)
    iface.ts_mul, iface.ts_div = ts_scale(iface.tsresol)
    iface.native_ns = iface.ts_mul == iface.ts_div == 1 and not iface.ts_offset_s
    section.interfaces.append(iface)
    return iface


def linktype_refusal(iface: Interface) -> str:
    return (
        f"pcapng interface {iface.id} has link type {iface.linktype}, not 252 (exported PDU): "
        "not a vuinspect capture"
    )


def payload_start(buf: bytes, start: int, end: int) -> int | str:
    """Offset of our pseudo-header inside an exported-PDU packet, or why it is not ours."""
    if buf[start : start + PREFIX_LEN] == EXPORTED_PDU_PREFIX:
        return start + PREFIX_LEN
    pos = start
    name = None
    while pos + 4 <= end:
        tag, size = _TLV.unpack_from(buf, pos)
        pos += 4
        if tag == EXP_PDU_TAG_END_OF_OPT:
            if name == DISSECTOR_NAME.encode():
                return pos
            if name is None:
                return "exported-PDU packet names no dissector"
            return f"exported-PDU packet for dissector {name.decode('ascii', 'replace')!r}, not vhost_user"
        if tag == EXP_PDU_TAG_DISSECTOR_NAME:
            name = bytes(buf[pos : pos + size]).rstrip(b"\0")
        pos += size
    return "exported-PDU tags without end-of-options"


def epb_frame(buf: bytes, pos: int, blen: int, section: Section) -> Frame | str:
    """Decode the EPB at ``pos`` into a Frame, or say why the packet is not ours.

    Raises :class:`CaptureError` (with the block offset) when the block is ours
    but damaged.
    """
    iface_id, ts_high, ts_low, caplen = section.epb.unpack_from(buf, pos + 8)
    if caplen > blen - 32:
        raise CaptureError(
            f"packet block at offset {pos}: captured length {caplen} exceeds block length {blen}", pos
        )
    try:
        iface = section.interfaces[iface_id]
    except IndexError:
        raise CaptureError(
            f"packet block at offset {pos} names interface {iface_id}, "
            f"only {len(section.interfaces)} defined",
            pos,
        ) from None
    if not iface.ours:
        return linktype_refusal(iface)
    start = pos + 28
    end = start + caplen
    p = payload_start(buf, start, end)
    if isinstance(p, str):
        return p
    try:
        frame, _ = pseudohdr.decode(buf[p:end], iface.ts_ns(ts_high << 32 | ts_low))
    except pseudohdr.PseudoHeaderError as exc:
        raise CaptureError(f"packet block at offset {pos}: {exc.reason}", pos) from None
    return frame

