"""Request headers in a chain's first buffer, per device type, as layout tables.

Written with the same ``Field``/``Layout`` records as the control-plane
payloads (protocol/layouts.py) so a renderer or the Lua generator can walk them
the same way.  All virtio (VERSION_1) ring data is little-endian.
"""

from __future__ import annotations

import struct
from typing import Any

from ..protocol.layouts import Field, Layout

BLK_TYPES = {
    0: "IN",
    1: "OUT",
    2: "SCSI_CMD",
    4: "FLUSH",
    8: "GET_ID",
    10: "GET_LIFETIME",
    11: "DISCARD",
    13: "WRITE_ZEROES",
    14: "SECURE_ERASE",
    15: "ZONE_APPEND",
    16: "ZONE_REPORT",
    18: "ZONE_OPEN",
    20: "ZONE_CLOSE",
    22: "ZONE_FINISH",
    24: "ZONE_RESET",
    26: "ZONE_RESET_ALL",
}
BLK_STATUS = {0: "OK", 1: "IOERR", 2: "UNSUPP"}
NET_HDR_FLAGS = (("needs_csum", 0x1), ("data_valid", 0x2), ("rsc_info", 0x4))
NET_GSO_TYPES = {
    0: "NONE",
    1: "TCPV4",
    3: "UDP",
    4: "TCPV6",
    5: "UDP_L4",
    0x80: "NONE|ECN",
    0x81: "TCPV4|ECN",
    0x84: "TCPV6|ECN",
}
FUSE_OPCODES = {
    1: "LOOKUP",
    2: "FORGET",
    3: "GETATTR",
    4: "SETATTR",
    5: "READLINK",
    6: "SYMLINK",
    8: "MKNOD",
    9: "MKDIR",
    10: "UNLINK",
    11: "RMDIR",
    12: "RENAME",
    13: "LINK",
    14: "OPEN",
    15: "READ",
    16: "WRITE",
    17: "STATFS",
    18: "RELEASE",
    20: "FSYNC",
    21: "SETXATTR",
    22: "GETXATTR",
    23: "LISTXATTR",
    24: "REMOVEXATTR",
    25: "FLUSH",
    26: "INIT",
    27: "OPENDIR",
    28: "READDIR",
    29: "RELEASEDIR",
    30: "FSYNCDIR",
    31: "GETLK",
    32: "SETLK",
    33: "SETLKW",
    34: "ACCESS",
    35: "CREATE",
    36: "INTERRUPT",
    37: "BMAP",
    38: "DESTROY",
    39: "IOCTL",
    40: "POLL",
    41: "NOTIFY_REPLY",
    42: "BATCH_FORGET",
    43: "FALLOCATE",
    44: "READDIRPLUS",
    45: "RENAME2",
    46: "LSEEK",
    47: "COPY_FILE_RANGE",
    48: "SETUPMAPPING",
    49: "REMOVEMAPPING",
    50: "SYNCFS",
    51: "TMPFILE",
    52: "STATX",
    4096: "CUSE_INIT",
}

BLK_REQ = Layout(
    "virtio_blk_req",
    (
        Field("type", "I", "enum", BLK_TYPES, bitfields=(("barrier", 0x80000000),)),
        Field("ioprio", "I"),
        Field("sector", "Q"),
    ),
    doc="struct virtio_blk_outhdr",
)
NET_HDR = Layout(
    "virtio_net_hdr",
    (
        Field("flags", "B", "hex", bitfields=NET_HDR_FLAGS),
        Field("gso_type", "B", "enum", NET_GSO_TYPES),
        Field("hdr_len", "H"),
        Field("gso_size", "H"),
        Field("csum_start", "H"),
        Field("csum_offset", "H"),
        Field("num_buffers", "H", doc="with VERSION_1 or MRG_RXBUF"),
    ),
    doc="struct virtio_net_hdr_mrg_rxbuf (12 bytes)",
)
FUSE_IN = Layout(
    "fuse_in_header",
    (
        Field("len", "I"),
        Field("opcode", "I", "enum", FUSE_OPCODES),
        Field("unique", "Q", "hex"),
        Field("nodeid", "Q", "hex"),
        Field("uid", "I"),
        Field("gid", "I"),
        Field("pid", "I"),
        Field("total_extlen", "H"),
        Field("padding", "H", "padding"),
    ),
    doc="struct fuse_in_header (40 bytes)",
)

HEADERS: dict[str, Layout] = {"blk": BLK_REQ, "net": NET_HDR, "fs": FUSE_IN}


def header_size(layout: Layout) -> int:
    return sum(f.size for f in layout.fields if isinstance(f, Field))


def decode_header(device: str | None, data: bytes, order: str = "<") -> dict[str, Any] | None:
    """The device's request header from the first buffer's bytes; None if unknown/short.

    Enum fields gain a ``<name>_name`` entry (unknown values as ``UNKNOWN_<n>``).
    ``order``: the ring's byte order (a legacy device of a big-endian guest: ``>``).
    """
    layout = HEADERS.get(device or "")
    if layout is None or len(data) < header_size(layout):
        return None
    out: dict[str, Any] = {"layout": layout.name}
    off = 0
    for f in layout.fields:
        assert isinstance(f, Field)
        (value,) = struct.unpack_from(order + f.fmt, data, off)
        off += f.size
        out[f.name] = value
        if f.values is not None:
            key = value & ~0x80000000 if f.name == "type" else value
            out[f.name + "_name"] = f.values.get(key, f"UNKNOWN_{key}")
        for name, mask in f.bitfields:
            out[name] = bool(value & mask)
    return out
