"""Payload layouts as data, in the spirit of dpkt's ``__hdr__`` tables.

Each layout is an ordered tuple of fields with a ``struct`` format code and a
display hint; byte order is *not* part of the table (vhost-user is host-native,
PROTOCOL.md §1.2) and is bound once per capture when decoding.  The Python
decoder and the generated Lua dissector both walk these tables, so a layout is
written exactly once.

Offsets and sizes follow QEMU ``docs/interop/vhost-user.rst`` and
``hw/virtio/vhost-user.c`` (see ../shared/PROTOCOL.md §4 for where the spec's
tables differ from the wire).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Display hints understood by the decoder, the renderer and the Lua generator.
DISPLAYS = (
    "dec",  # plain number
    "hex",  # address, size or raw word: shown in hex
    "size",  # a byte count: hex plus a human size
    "bool",  # 0/1
    "enum",  # named values (Field.values)
    "virtio_features",  # u64 virtio feature bits, names depend on the device type
    "protocol_features",  # u64 vhost-user protocol feature bits
    "status",  # virtio device status byte
    "vring_base",  # split or packed ring base (RING_PACKED decides)
    "uuid",  # 16 bytes, RFC 4122 order
    "mac",  # 6 bytes
    "bytes",  # opaque bytes, shown as hex
    "padding",  # must be zero; shown only when it is not
)
#: The displays a face shows in hex (``0x...``): addresses, offsets, masks, flag, feature and
#: status words, and memory byte counts, as QEMU's vhost-user trace and DPDK's VHOST_CONFIG log
#: print them; the others (counts, queue sizes, indices, numbers of queues, results) in decimal.
HEX_DISPLAYS = frozenset({"hex", "size", "virtio_features", "protocol_features", "status"})
#: The keys a ``vring_base`` field adds beside its number (a split ring: the first only).
VRING_BASE_KEYS = ("avail_idx", "avail_wrap", "used_idx", "used_wrap")


@dataclass(frozen=True, slots=True)
class Field:
    """A fixed-size field: ``fmt`` is one struct code (B H I Q i q) or ``Ns``."""

    name: str
    fmt: str
    display: str = "dec"
    values: dict[int, str] | None = None
    bitfields: tuple[tuple[str, int], ...] = ()  # (name, mask) read out of the value
    doc: str = ""
    size: int = field(init=False, compare=False)
    is_bytes: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", struct.calcsize("<" + self.fmt))
        object.__setattr__(self, "is_bytes", self.fmt.endswith("s"))


@dataclass(frozen=True, slots=True)
class Array:
    """``count`` items of ``item``; ``count`` names an earlier field or is a number."""

    name: str
    item: Layout
    count: str | int
    max_count: int


@dataclass(frozen=True, slots=True)
class Tail:
    """Variable trailing bytes; ``length`` names an earlier field, or None for 'the rest'."""

    name: str
    length: str | None = None
    display: str = "bytes"


@dataclass(frozen=True, slots=True)
class Layout:
    """An ordered payload description.

    ``when`` narrows a choice between alternative layouts of one message: the
    named field must hold that value.  ``exact`` says the payload size must be
    exactly the computed size (all vhost-user payloads are, except the
    variable config data).
    """

    name: str
    fields: tuple[Field | Array | Tail, ...]
    doc: str = ""
    when: tuple[str, int] | None = None
    exact: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def fixed_size(self) -> int:
        """Size of the leading fixed fields (arrays and tails excluded)."""
        size = 0
        for f in self.fields:
            if not isinstance(f, Field):
                break
            size += f.size
        return size

    @property
    def is_fixed(self) -> bool:
        return all(isinstance(f, Field) for f in self.fields)


def _L(name: str, *fields: Field | Array | Tail, doc: str = "", **kw) -> Layout:
    return Layout(name, tuple(fields), doc, **kw)


def pad(n: int, name: str = "padding") -> Field:
    return Field(name, f"{n}s", "padding")


VRING_FD_BITS = (("index", 0xFF), ("nofd", 0x100))

# --- scalars -----------------------------------------------------------------
EMPTY = _L("empty", doc="no payload")
U64 = _L("u64", Field("value", "Q", "hex"))
ACK = _L(
    "ack",
    Field("result", "Q", "dec", doc="0 = success, non-zero = failure"),
    doc="REPLY_ACK / plain u64 result",
)
VIRTIO_FEATURES = _L("virtio_features", Field("features", "Q", "virtio_features"))
PROTOCOL_FEATURES = _L("protocol_features", Field("features", "Q", "protocol_features"))
QUEUE_NUM = _L("queue_num", Field("num_queues", "Q"))
MEM_SLOTS = _L("mem_slots", Field("slots", "Q"))
STATUS = _L("status", Field("status", "Q", "status"))
MTU = _L("mtu", Field("mtu", "Q"))
RARP = _L("rarp", Field("mac", "6s", "mac"), pad(2))
SESSION_ID = _L("session_id", Field("session_id", "q"))
POSTCOPY_ACK = _L(
    "postcopy_ack",
    Field("result", "Q"),
    doc="postcopy: the front-end repeats the request id with u64 0 as 'may fault'",
)
VRING_FD = _L(
    "vring_fd",
    Field("value", "Q", "hex", bitfields=VRING_FD_BITS),
    doc="bits 0-7 vring index, bit 8 NOFD (no fd: poll)",
)

# --- vring state (struct vhost_vring_state) ------------------------------------
VRING_STATE = _L("vring_state", Field("index", "I"), Field("num", "I"))
VRING_NUM = _L("vring_num", Field("index", "I"), Field("num", "I", doc="queue size"))
VRING_BASE = _L("vring_base", Field("index", "I"), Field("num", "I", "vring_base"))
VRING_ENABLE = _L(
    "vring_enable", Field("index", "I"), Field("num", "I", "enum", {0: "disable", 1: "enable"})
)
VRING_ENDIAN = _L(
    "vring_endian",
    Field("index", "I"),
    Field("num", "I", "enum", {0: "little-endian", 1: "big-endian"}),
)
VRING_ADDR = _L(
    "vring_addr",
    Field("index", "I"),
    Field("flags", "I", "hex", bitfields=(("log", 0x1),)),
    Field("desc", "Q", "hex", doc="descriptor table address"),
    Field("used", "Q", "hex", doc="used ring address"),
    Field("avail", "Q", "hex", doc="available ring address"),
    Field("log", "Q", "hex", doc="guest-physical address of the used ring for dirty logging"),
)

# --- memory -------------------------------------------------------------------
_REGION_FIELDS = (
    Field("guest_phys_addr", "Q", "hex"),
    Field("memory_size", "Q", "size"),
    Field("userspace_addr", "Q", "hex"),
    Field("mmap_offset", "Q", "hex"),
)
_XEN_FIELDS = (
    Field(
        "xen_mmap_flags",
        "I",
        "hex",
        bitfields=(("foreign", 0x1), ("grant", 0x2), ("map_on_demand", 0x100)),
    ),
    Field("domid", "I"),
)
MEM_REGION = _L("mem_region", *_REGION_FIELDS)
MEM_REGION_XEN = _L("mem_region_xen", *_REGION_FIELDS, *_XEN_FIELDS)
MAX_REGIONS = 8
MEM_TABLE = _L(
    "mem_table",
    Field("nregions", "I"),
    pad(4),
    Array("regions", MEM_REGION, "nregions", MAX_REGIONS),
)
MEM_TABLE_XEN = _L(
    "mem_table_xen",
    Field("nregions", "I"),
    pad(4),
    Array("regions", MEM_REGION_XEN, "nregions", MAX_REGIONS),
)
MEM_REG = _L("mem_reg", pad(8), *_REGION_FIELDS, doc="single region (ADD/REM_MEM_REG)")
MEM_REG_XEN = _L("mem_reg_xen", pad(8), *_REGION_FIELDS, *_XEN_FIELDS)
LOG = _L("log", Field("mmap_size", "Q", "size"), Field("mmap_offset", "Q", "hex"))

# --- IOTLB (struct vhost_iotlb_msg) --------------------------------------------
IOTLB_PERM = {0: "none", 1: "RO", 2: "WO", 3: "RW"}
IOTLB_TYPE = {
    1: "MISS",
    2: "UPDATE",
    3: "INVALIDATE",
    4: "ACCESS_FAIL",
    5: "BATCH_BEGIN",
    6: "BATCH_END",
}
IOTLB = _L(
    "iotlb",
    Field("iova", "Q", "hex"),
    Field("size", "Q", "size"),
    Field("uaddr", "Q", "hex"),
    Field("perm", "B", "enum", IOTLB_PERM),
    Field("type", "B", "enum", IOTLB_TYPE),
    pad(6),
)

# --- config space -----------------------------------------------------------------
CONFIG_FLAGS = {0: "FRONTEND", 1: "MIGRATION"}
MAX_CONFIG_SIZE = 256
CONFIG = _L(
    "config",
    Field("offset", "I"),
    Field("size", "I"),
    Field("flags", "I", "enum", CONFIG_FLAGS),
    Tail("data", "size"),
    exact=False,
)

# --- back-end channel structures ---------------------------------------------------
VRING_AREA = _L(
    "vring_area",
    Field("value", "Q", "hex", bitfields=VRING_FD_BITS),
    Field("size", "Q", "size"),
    Field("offset", "Q", "hex"),
)
SHARED = _L("shared", Field("uuid", "16s", "uuid"))
SHMEM_MAP = _L(
    "shmem_map",
    Field("shmid", "B"),
    pad(7),
    Field("fd_offset", "Q", "hex"),
    Field("shm_offset", "Q", "hex"),
    Field("len", "Q", "size"),
    Field("flags", "Q", "hex", bitfields=(("rw", 0x1),)),
)
SHMEM_SIZE = _L("shmem_size", Field("size", "Q", "size"))
SHMEM_CONFIG = _L(
    "shmem_config", Field("nregions", "I"), pad(4), Array("memory_sizes", SHMEM_SIZE, 256, 256)
)

# --- inflight, device state -----------------------------------------------------------
INFLIGHT = _L(
    "inflight",
    Field("mmap_size", "Q", "size"),
    Field("mmap_offset", "Q", "hex"),
    Field("num_queues", "H"),
    Field("queue_size", "H"),
    pad(4),
)
DEVICE_STATE_DIRECTION = {0: "SAVE", 1: "LOAD"}
DEVICE_STATE_PHASE = {0: "STOPPED"}
DEVICE_STATE = _L(
    "device_state",
    Field("direction", "I", "enum", DEVICE_STATE_DIRECTION),
    Field("phase", "I", "enum", DEVICE_STATE_PHASE),
)
DEVICE_STATE_RESULT = _L(
    "device_state_result",
    Field("result", "Q", "hex", bitfields=(("error", 0xFF), ("no_fd", 0x100))),
)

# --- crypto sessions (LP64 host layouts, PROTOCOL.md §4.12) ---------------------------
CRYPTO_OPS = {
    0x002: "CIPHER_CREATE_SESSION",
    0x102: "HASH_CREATE_SESSION",
    0x202: "MAC_CREATE_SESSION",
    0x302: "AEAD_CREATE_SESSION",
    0x404: "AKCIPHER_CREATE_SESSION",
}
CRYPTO_SYM = _L(
    "crypto_session_sym",
    Field("op_code", "Q", "enum", CRYPTO_OPS),
    Field("cipher_alg", "I"),
    Field("key_len", "I"),
    Field("hash_alg", "I"),
    Field("hash_result_len", "I"),
    Field("auth_key_len", "I"),
    Field("add_len", "I"),
    Field("op_type", "B"),
    Field("direction", "B"),
    Field("hash_mode", "B"),
    Field("alg_chain_order", "B"),
    pad(4),
    Field("cipher_key_ptr", "Q", "hex"),
    Field("auth_key_ptr", "Q", "hex"),
    Field("key", "64s", "bytes"),
    Field("auth_key", "512s", "bytes"),
    pad(432, "unused"),
    Field("session_id", "q"),
)
CRYPTO_ASYM = _L(
    "crypto_session_asym",
    Field("op_code", "Q", "enum", CRYPTO_OPS),
    Field("algo", "I"),
    Field("keytype", "I"),
    Field("keylen", "I"),
    pad(4),
    Field("key_ptr", "Q", "hex"),
    Field("rsa_padding_algo", "I"),
    Field("rsa_hash_algo", "I"),
    Field("key", "1024s", "bytes"),
    Field("session_id", "q"),
    when=("op_code", 0x404),
)
CRYPTO_OLD = _L(
    "crypto_session_old",
    Field("session_id", "q"),
    Field("cipher_alg", "I"),
    Field("key_len", "I"),
    Field("hash_alg", "I"),
    Field("hash_result_len", "I"),
    Field("auth_key_len", "I"),
    Field("add_len", "I"),
    Field("op_type", "B"),
    Field("direction", "B"),
    Field("hash_mode", "B"),
    Field("alg_chain_order", "B"),
    pad(20, "reserved"),
    Field("key", "64s", "bytes"),
    Field("auth_key", "512s", "bytes"),
    doc="layout before the asymmetric-crypto patch (632 bytes)",
)

ALL_LAYOUTS: tuple[Layout, ...] = tuple(
    v for v in list(globals().values()) if isinstance(v, Layout)
)


def layout_size(layout: Layout, counts: dict[str, int] | None = None) -> int:
    """Size of a layout, resolving arrays by ``counts`` (default: zero items)."""
    counts = counts or {}
    size = 0
    for f in layout.fields:
        if isinstance(f, Field):
            size += f.size
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else counts.get(f.count, 0)
            size += n * layout_size(f.item)
        else:
            size += counts.get(f.length or "", 0)
    return size
