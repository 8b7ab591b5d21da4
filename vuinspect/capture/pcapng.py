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
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from vuinspect.capture import pseudohdr
from vuinspect.capture.errors import CaptureError, CaptureFormatError
from vuinspect.frames import Frame
from vuinspect.protocol.requests import WIRESHARK_NAME

#: What the parsers read: the reader's buffer or the index's mmap.
Buffer = bytes | bytearray | memoryview | mmap.mmap

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
        struct.pack(">HH", EXP_PDU_TAG_DISSECTOR_NAME, len(padded))
        + padded
        + struct.pack(">HH", EXP_PDU_TAG_END_OF_OPT, 0)
    )


#: The 20 bytes that start every packet of a vuinspect capture.
EXPORTED_PDU_PREFIX = _exported_pdu_prefix(WIRESHARK_NAME)
PREFIX_LEN = len(EXPORTED_PDU_PREFIX)

#: A block longer than this is taken as a corrupt length, not buffered.
MAX_BLOCK_LEN = 64 << 20
#: EPB bytes beyond the packet data as the writer makes them: 28 header + epb_flags
#: option (8) + end of options (4) + trailer (4).
EPB_OVERHEAD = 28 + 8 + 4 + 4
#: Largest captured length Wireshark 4.0 accepts in a packet (WTAP_MAX_PACKET_SIZE_STANDARD):
#: the writer splits a longer data frame into several packets (docs/capture-format.md §1).
MAX_CAPLEN = 262_144

#: ``if_description`` of our interfaces: "conn N main|backend", optionally " capture ID".
IF_DESCRIPTION_RE = re.compile(
    r"conn (\d{1,10}) (main|backend)(?: capture ([0-9A-Za-z_-]{1,64}))?\Z"
)
#: An ``opt_comment`` of the section header naming the capture: "vuinspect capture ID".
SHB_CAPTURE_RE = re.compile(r"vuinspect capture ([0-9A-Za-z_-]{1,64})\Z")

_HDR = {"<": struct.Struct("<II"), ">": struct.Struct(">II")}
# iface, ts_high, ts_low, caplen, original length
_EPB = {"<": struct.Struct("<IIIII"), ">": struct.Struct(">IIIII")}
_U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}
_TLV = struct.Struct(">HH")

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x34\xcd\xb2\xa1",
    b"\xa1\xb2\xcd\x34",
}
#: The first 4 bytes of a pcapng file (the SHB type reads the same in either byte order).
SHB_MAGIC = struct.pack("<I", BT_SHB)


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
    origin: int = 0  # the capture it came from, when files were merged (Origins)
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

    __slots__ = (
        "index",
        "offset",
        "order",
        "hdr",
        "epb",
        "u32",
        "interfaces",
        "capture_id",
    )

    def __init__(self, index: int, offset: int, order: str) -> None:
        self.index = index
        self.offset = offset
        self.order = order
        self.capture_id: str | None = None
        self.hdr = _HDR[order]
        self.epb = _EPB[order]
        self.u32 = _U32[order]
        self.interfaces: list[Interface] = []


def is_pcap(head: bytes) -> bool:
    """Does ``head`` start a classic pcap (libpcap) file, µs or ns, either byte order?"""
    return head[:4] in _PCAP_MAGICS


@dataclass(slots=True)
class PcapHeader:
    """A classic pcap file header: record byte order, ns per timestamp fraction unit, snaplen."""

    order: str
    frac_ns: int
    snaplen: int
    linktype: int


def pcap_header(head: bytes) -> PcapHeader:
    """Parse the 24-byte header of a classic pcap file (µs or ns, either byte order).

    Raises CaptureFormatError for one that is cut short, modified-pcap, or
    not of link type 252.
    """
    if len(head) < 24:
        raise CaptureFormatError(
            f"classic pcap (libpcap) header cut short: {len(head)} of 24 bytes", 0
        )
    magic = bytes(head[:4])
    kinds = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000),
        b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1),
        b"\xa1\xb2\x3c\x4d": (">", 1),
    }
    if magic not in kinds:
        raise CaptureFormatError(
            "modified (Kuznetzov) pcap file: save it as pcapng or pcap first", 0
        )
    order, frac_ns = kinds[magic]
    snaplen, linktype = struct.unpack_from(order + "II", head, 16)
    if linktype & 0xFFFF != LINKTYPE_WIRESHARK_UPPER_PDU:
        raise CaptureFormatError(
            f"classic pcap (libpcap) file with link type {linktype & 0xFFFF}, not 252 (exported PDU): "
            "not a vuinspect capture",
            0,
        )
    return PcapHeader(order, frac_ns, snaplen, linktype & 0xFFFF)


def sniff(head: bytes) -> str | None:
    """Say in one line why ``head`` does not start a pcapng file, or None if it may."""
    if not head:
        return "empty input: no pcapng section header"
    if head[:4] == SHB_MAGIC[: len(head[:4])]:
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


def shb_order(buf: Buffer, pos: int) -> str | None:
    """Byte order of the SHB at ``pos`` from its byte-order magic, or None if bad."""
    bom = buf[pos + 8 : pos + 12]
    if bom == b"\x4d\x3c\x2b\x1a":
        return "<"
    if bom == b"\x1a\x2b\x3c\x4d":
        return ">"
    return None


def parse_shb(buf: Buffer, pos: int, blen: int, section: Section) -> None:
    """Check an SHB's version (its length and order were checked by the caller)."""
    if blen < 28:
        raise CaptureError(
            f"section header at offset {section.offset} too short ({blen} bytes)", section.offset
        )
    major, minor = struct.unpack_from(section.order + "HH", buf, pos + 12)
    if major != 1:
        raise CaptureFormatError(f"pcapng version {major}.{minor} is not supported (only 1.x)")
    for code, value in iter_options(buf, pos + 24, pos + blen - 4, section.order):
        if code == OPT_COMMENT:
            m = SHB_CAPTURE_RE.match(value.rstrip(b"\0").decode("utf-8", "replace"))
            if m:
                section.capture_id = m.group(1)


def iter_options(buf: Buffer, start: int, end: int, order: str):
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


def parse_idb(buf: Buffer, pos: int, blen: int, section: Section) -> Interface:
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


def payload_start(buf: Buffer, start: int, end: int) -> int | str:
    """Offset of our pseudo-header inside an exported-PDU packet, or why it is not ours."""
    if buf[start : start + PREFIX_LEN] == EXPORTED_PDU_PREFIX:
        return start + PREFIX_LEN
    pos = start
    name = None
    while pos + 4 <= end:
        tag, size = _TLV.unpack_from(buf, pos)
        pos += 4
        if tag == EXP_PDU_TAG_END_OF_OPT:
            if name == WIRESHARK_NAME.encode():
                return pos
            if name is None:
                return "exported-PDU packet names no dissector"
            return f"exported-PDU packet for dissector {name.decode('ascii', 'replace')!r}, not {WIRESHARK_NAME}"
        if tag == EXP_PDU_TAG_DISSECTOR_NAME:
            name = bytes(buf[pos : pos + size]).rstrip(b"\0")
        pos += size
    return "exported-PDU tags without end-of-options"


def packet_frame(
    buf: Buffer, start: int, end: int, olen: int, ts: int, offset: int
) -> Frame | str | None:
    """The Frame in packet bytes ``buf[start:end]`` (originally ``olen`` long), for pcapng and pcap.

    A packet a snap length cut gives a Frame with ``truncated`` set, or None
    when not even our pseudo-header's fixed part was kept; a packet that is
    not ours gives the reason; ours but damaged raises CaptureError at ``offset``.
    """
    cut = olen > end - start
    p = payload_start(buf, start, end)
    if isinstance(p, str):
        if cut and EXPORTED_PDU_PREFIX.startswith(bytes(buf[start:end])):
            return None  # the snap length left less than the exported-PDU tags
        return p
    try:
        if cut:
            got = pseudohdr.decode_cut(buf[p:end], ts)
            if got is None:
                return None
            frame, hdr_len = got
            frame.truncated = olen - (p - start) - hdr_len - len(frame.data)
        else:
            frame, _ = pseudohdr.decode(buf[p:end], ts)
    except pseudohdr.PseudoHeaderError as exc:
        raise CaptureError(f"packet block at offset {offset}: {exc.reason}", offset) from None
    return frame


def epb_frame(
    buf: Buffer, pos: int, blen: int, section: Section, base: int = 0
) -> Frame | str | None:
    """Decode the EPB at ``pos`` into a Frame, or say why the packet is not ours.

    A packet a snap length cut (captured < original length) gives a Frame
    with ``truncated`` set, or None when not even our pseudo-header's fixed
    part was kept.  ``opt_comment`` options become ``Frame.comment``.  Raises
    :class:`CaptureError` (with the block's file offset, ``base + pos``) when the block is ours
    but damaged.
    """
    iface_id, ts_high, ts_low, caplen, olen = section.epb.unpack_from(buf, pos + 8)
    at = base + pos
    if caplen > blen - 32:
        raise CaptureError(
            f"packet block at offset {at}: captured length {caplen} exceeds block length {blen}", at
        )
    try:
        iface = section.interfaces[iface_id]
    except IndexError:
        raise CaptureError(
            f"packet block at offset {at} names interface {iface_id}, "
            f"only {len(section.interfaces)} defined",
            at,
        ) from None
    if not iface.ours:
        return linktype_refusal(iface)
    start = pos + 28
    end = start + caplen
    frame = packet_frame(buf, start, end, olen, iface.ts_ns(ts_high << 32 | ts_low), at)
    if not isinstance(frame, Frame):
        return frame
    opts = start + ((caplen + 3) & ~3)
    area = pos + blen - 4 - opts  # options; ours hold only epb_flags (8 bytes + end of options)
    if area > 12 or (
        area >= 8 and struct.unpack_from(section.order + "H", buf, opts)[0] != EPB_FLAGS
    ):
        comments = [
            v.decode("utf-8", "replace")
            for code, v in iter_options(buf, opts, pos + blen - 4, section.order)
            if code == OPT_COMMENT
        ]
        if comments and any(comments):  # an empty opt_comment is no comment (the writer's)
            frame.comment = "\n".join(comments)
    return frame


class Origins:
    """Which capture each interface came from, and the connection numbers shown for each.

    ``mergecap`` or ``cat`` of two runs puts two ``conn 1`` in one file.  An
    interface's origin is the capture id its description (or its section
    header) names; without one, a new section is a new origin, and inside a
    section the n-th interface described "conn N main" belongs to the n-th
    origin ("conn N backend" to that of the latest "conn N main" before it).  The first origin to use a conn number keeps it; a later one
    using it gets the next number above every number used so far (in file
    order, so the Lua dissector can do the same in its first pass).
    """

    def __init__(self) -> None:
        self._keys: dict[tuple, int] = {}
        self._seen: dict[tuple[int, str], int] = {}  # (section, description) -> interfaces so far
        self._main: dict[
            tuple[int, str], tuple
        ] = {}  # (section, conn) -> origin key of its latest main
        self.multi = False  # more than one origin so far: conn numbers go through conn()
        self._owner: dict[int, int] = {}  # shown conn number -> origin
        self._shown: dict[tuple[int, int], int] = {}  # (origin, conn) -> shown conn number
        self._next = 1  # above every number claimed
        self._low = 1  # below it every number is claimed (used once past the u32 range)

    def add(self, iface: Interface, section: Section) -> None:
        """Give a just-parsed interface its origin."""
        m = IF_DESCRIPTION_RE.match(iface.description)
        cid = (m.group(3) if m else None) or section.capture_id
        if cid:
            key: tuple = ("id", cid)
        elif m and m.group(2) == "backend" and (section.index, m.group(1)) in self._main:
            # a back-end channel belongs with the latest main channel of its connection
            key = self._main[(section.index, m.group(1))]
        elif m:
            d = (section.index, f"{m.group(1)} {m.group(2)}")
            n = self._seen[d] = self._seen.get(d, -1) + 1
            key = ("section", section.index, n)
            if m.group(2) == "main":
                self._main[(section.index, m.group(1))] = key
        else:
            key = ("section", section.index, 0)
        origin = iface.origin = self._keys.setdefault(key, len(self._keys))
        if origin:
            self.multi = True
        elif m and not self.multi:  # one origin so far: its conns are those its interfaces name
            self.conn(0, int(m.group(1)))

    def conn(self, origin: int, conn: int) -> int:
        """The connection number shown for ``conn`` of ``origin`` (claimed at first sight)."""
        shown = self._shown.get((origin, conn))
        if shown is not None:
            return shown
        if conn not in self._owner:  # not even by this origin for another of its conns
            shown = conn
        elif self._next <= 0xFFFFFFFF:
            shown = self._next
        else:  # past the u32 range: the lowest free number, searched upward once overall
            shown = self._low
            while shown in self._owner:
                shown += 1
            self._low = shown + 1
        self._owner[shown] = origin
        self._shown[(origin, conn)] = shown
        self._next = max(self._next, shown + 1)
        return shown


class Blocks:
    """The pcapng block walk shared by CaptureReader (streaming) and CaptureIndex (mmap).

    :meth:`walk` checks each block's framing, opens sections, parses interface
    blocks and yields ``(pos, blen, section)`` for every Enhanced Packet Block;
    other blocks are skipped.  It returns at the first block not wholly in the
    buffer, leaving ``pos`` there and ``need`` = the bytes that block needs;
    damage raises :class:`CaptureError` with the file offset.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.interfaces: list[Interface] = []
        self.section: Section | None = None
        self.origins = Origins()
        self.pos = 0
        self.need = 8

    def walk(
        self, buf: Buffer, pos: int, end: int, base: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, int, Section]]:
        """Walk ``buf[pos:end]`` (byte 0 at file offset ``base``); no block starts at ``stop`` or after."""
        section = self.section
        hdr = _HDR["<"].unpack_from if section is None else section.hdr.unpack_from
        u32 = _U32["<"].unpack_from if section is None else section.u32.unpack_from
        bt_shb, bt_epb, bt_idb, max_len = BT_SHB, BT_EPB, BT_IDB, MAX_BLOCK_LEN  # locals: hot loop
        self.need = 8
        stop = end if stop is None else min(stop, end)
        try:
            while pos < stop and pos + 8 <= end:
                btype, blen = hdr(buf, pos)
                if btype == bt_epb and section is not None:
                    if (
                        blen < 32
                        or blen & 3
                        or blen > max_len
                        or pos + blen > end
                        or u32(buf, pos + blen - 4)[0] != blen
                    ):
                        self._check(buf, pos, end, base, blen, u32)  # raises, or sets need
                        break
                    yield pos, blen, section
                    pos += blen
                    continue
                new = None
                if btype == bt_shb:  # the same in both byte orders: read the order, then the length
                    if pos + 12 > end:
                        self.need = 12
                        break
                    order = shb_order(buf, pos)
                    if order is None:
                        raise CaptureError(
                            f"section header at offset {base + pos} has a bad byte-order magic",
                            base + pos,
                        )
                    new = Section(len(self.sections), base + pos, order)
                    hdr, u32 = new.hdr.unpack_from, new.u32.unpack_from
                    blen = hdr(buf, pos)[1]
                elif section is None:
                    raise CaptureError(
                        f"block at offset {base + pos} precedes any section header", base + pos
                    )
                if (
                    blen < 12
                    or blen & 3
                    or blen > max_len
                    or pos + blen > end
                    or u32(buf, pos + blen - 4)[0] != blen
                ):
                    self._check(buf, pos, end, base, blen, u32)
                    break
                if new is not None:
                    parse_shb(buf, pos, blen, new)
                    section = self.section = new
                    self.sections.append(new)
                elif btype == bt_idb and section is not None:  # (it is: raised above if not)
                    iface = parse_idb(buf, pos, blen, section)
                    self.interfaces.append(iface)
                    self.origins.add(iface, section)
                pos += blen
        except CaptureFormatError as exc:
            if exc.offset is None:
                exc.offset = base + pos
            raise
        except CaptureError:
            raise
        except (ArithmeticError, LookupError, ValueError, struct.error) as exc:  # a last safety net
            raise CaptureError(
                f"block at offset {base + pos} is corrupt: {exc}", base + pos
            ) from None
        finally:
            self.pos = pos

    def _check(self, buf: Buffer, pos: int, end: int, base: int, blen: int, u32) -> None:
        """A block whose framing is off: raise the damage, or set ``need`` if it is only incomplete."""
        at = base + pos
        if blen < 12 or blen & 3 or blen > MAX_BLOCK_LEN:
            raise CaptureError(f"block at offset {at} has an invalid length {blen}", at)
        if pos + blen > end:
            self.need = blen
            return
        if u32(buf, pos + blen - 4)[0] != blen:
            raise CaptureError(
                f"block at offset {at}: trailing length {u32(buf, pos + blen - 4)[0]} does not match {blen}",
                at,
            )
        if blen < 32:  # an EPB: unpacking would read past the block
            raise CaptureError(f"packet block at offset {at} too short ({blen} bytes)", at)

    def cut_short(self, buf: Buffer, pos: int, end: int, base: int = 0) -> CaptureError:
        """The error for a block that stops at ``end`` (end of file)."""
        have = end - pos
        blen = None
        if have >= 8 and buf[pos : pos + 4] != SHB_MAGIC:
            blen = (self.section.hdr if self.section else _HDR["<"]).unpack_from(buf, pos)[1]
        elif have >= 12:
            order = shb_order(buf, pos)
            blen = None if order is None else _HDR[order].unpack_from(buf, pos)[1]
        if blen is not None:
            return CaptureError(
                f"block at offset {base + pos} cut short: header says {blen} bytes, {have} present",
                base + pos,
            )
        return CaptureError(
            f"block at offset {base + pos} cut short: {have} bytes present", base + pos
        )
