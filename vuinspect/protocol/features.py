"""Feature bits as data: vhost-user protocol features, virtio transport and device bits.

Names follow the spec without their ``VHOST_USER_PROTOCOL_F_`` / ``VIRTIO_F_`` /
``VIRTIO_NET_F_`` prefixes, so that one short name serves the CLI, the JSON, the
filter language and the Lua field ``vhost_user.features.protocol.<name lower>``.
Old names (``SLAVE_*``) are kept as aliases so that searches for them still work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bit:
    bit: int
    name: str
    doc: str = ""
    old_names: tuple[str, ...] = ()


# --- vhost-user protocol features (GET/SET_PROTOCOL_FEATURES) -----------------
PROTOCOL_FEATURES: tuple[Bit, ...] = (
    Bit(0, "MQ", "GET_QUEUE_NUM: multiple queues"),
    Bit(1, "LOG_SHMFD", "dirty log passed as a memfd in SET_LOG_BASE"),
    Bit(2, "RARP", "SEND_RARP after migration"),
    Bit(3, "REPLY_ACK", "NEED_REPLY acks with a u64 result"),
    Bit(4, "NET_MTU", "NET_SET_MTU", ("MTU",)),
    Bit(5, "BACKEND_REQ", "back-end channel via SET_BACKEND_REQ_FD", ("SLAVE_REQ",)),
    Bit(6, "CROSS_ENDIAN", "SET_VRING_ENDIAN for legacy cross-endian guests"),
    Bit(7, "CRYPTO_SESSION", "CREATE/CLOSE_CRYPTO_SESSION"),
    Bit(8, "PAGEFAULT", "postcopy migration (POSTCOPY_*)"),
    Bit(9, "CONFIG", "GET/SET_CONFIG and BACKEND_CONFIG_CHANGE_MSG"),
    Bit(10, "BACKEND_SEND_FD", "fds on the back-end channel", ("SLAVE_SEND_FD",)),
    Bit(11, "HOST_NOTIFIER", "BACKEND_VRING_HOST_NOTIFIER_MSG"),
    Bit(12, "INFLIGHT_SHMFD", "GET/SET_INFLIGHT_FD"),
    Bit(13, "RESET_DEVICE", "RESET_DEVICE"),
    Bit(14, "INBAND_NOTIFICATIONS", "VRING_KICK, BACKEND_VRING_CALL/ERR"),
    Bit(15, "CONFIGURE_MEM_SLOTS", "GET_MAX_MEM_SLOTS, ADD/REM_MEM_REG"),
    Bit(16, "STATUS", "SET/GET_STATUS"),
    Bit(17, "XEN_MMAP", "40-byte memory regions with Xen flags and domid"),
    Bit(18, "SHARED_OBJECT", "GET_SHARED_OBJECT, BACKEND_SHARED_OBJECT_*"),
    Bit(19, "DEVICE_STATE", "SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE"),
    Bit(20, "GET_VRING_BASE_INFLIGHT", "back-end may suspend in-flight I/O on GET_VRING_BASE"),
    Bit(21, "GPA_ADDRESSES", "ring and region addresses are guest-physical"),
    Bit(22, "SHMEM", "GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP/UNMAP", ("SHMEM_MAP",)),
    Bit(23, "GET_VRING_BASE_SKIP_DRAIN", "GET_VRING_BASE_SKIP_DRAIN message"),
)

# --- virtio transport / vhost bits (shared by every device type) --------------
TRANSPORT_FEATURES: tuple[Bit, ...] = (
    Bit(24, "NOTIFY_ON_EMPTY", "legacy"),
    Bit(26, "LOG_ALL", "VHOST_F_LOG_ALL: dirty logging"),
    Bit(27, "ANY_LAYOUT", "legacy"),
    Bit(28, "RING_INDIRECT_DESC"),
    Bit(29, "RING_EVENT_IDX"),
    Bit(30, "PROTOCOL_FEATURES", "VHOST_USER_F_PROTOCOL_FEATURES: GET/SET_PROTOCOL_FEATURES"),
    Bit(32, "VERSION_1"),
    Bit(33, "ACCESS_PLATFORM", "IOTLB messages", ("IOMMU_PLATFORM",)),
    Bit(34, "RING_PACKED", "packed virtqueues (changes the vring base encoding)"),
    Bit(35, "IN_ORDER"),
    Bit(36, "ORDER_PLATFORM"),
    Bit(37, "SR_IOV"),
    Bit(38, "NOTIFICATION_DATA"),
    Bit(39, "NOTIF_CONFIG_DATA"),
    Bit(40, "RING_RESET"),
    Bit(41, "ADMIN_VQ"),
)

#: Transport bits by name (the table above); the ones code tests, by their names.
TRANSPORT_BY_NAME: dict[str, int] = {b.name: b.bit for b in TRANSPORT_FEATURES}
PROTOCOL_FEATURES_BIT = TRANSPORT_BY_NAME["PROTOCOL_FEATURES"]
RING_PACKED_BIT = TRANSPORT_BY_NAME["RING_PACKED"]
LOG_ALL_BIT = TRANSPORT_BY_NAME["LOG_ALL"]
ACCESS_PLATFORM_BIT = TRANSPORT_BY_NAME["ACCESS_PLATFORM"]
EVENT_IDX_BIT = TRANSPORT_BY_NAME["RING_EVENT_IDX"]
VERSION_1_BIT = TRANSPORT_BY_NAME["VERSION_1"]
IN_ORDER_BIT = TRANSPORT_BY_NAME["IN_ORDER"]


def _bits(spec: str) -> tuple[Bit, ...]:
    """Parse ``"0 CSUM, 1 GUEST_CSUM"`` into Bits (compact tables below)."""
    out = []
    for item in spec.split(","):
        num, name = item.split()
        out.append(Bit(int(num), name))
    return tuple(out)


# --- device-specific bits, by virtio device type ------------------------------
DEVICE_FEATURES: dict[str, tuple[Bit, ...]] = {
    "net": _bits(
        "0 CSUM, 1 GUEST_CSUM, 2 CTRL_GUEST_OFFLOADS, 3 MTU, 5 MAC, 6 GSO, 7 GUEST_TSO4,"
        "8 GUEST_TSO6, 9 GUEST_ECN, 10 GUEST_UFO, 11 HOST_TSO4, 12 HOST_TSO6, 13 HOST_ECN,"
        "14 HOST_UFO, 15 MRG_RXBUF, 16 STATUS, 17 CTRL_VQ, 18 CTRL_RX, 19 CTRL_VLAN,"
        "20 CTRL_RX_EXTRA, 21 GUEST_ANNOUNCE, 22 MQ, 23 CTRL_MAC_ADDR, 50 DEVICE_STATS,"
        "52 VQ_NOTF_COAL, 53 NOTF_COAL, 54 GUEST_USO4, 55 GUEST_USO6, 56 HOST_USO,"
        "57 HASH_REPORT, 59 GUEST_HDRLEN, 60 RSS, 61 RSC_EXT, 62 STANDBY, 63 SPEED_DUPLEX"
    ),
    "blk": _bits(
        "0 BARRIER, 1 SIZE_MAX, 2 SEG_MAX, 4 GEOMETRY, 5 RO, 6 BLK_SIZE, 7 SCSI, 9 FLUSH,"
        "10 TOPOLOGY, 11 CONFIG_WCE, 12 MQ, 13 DISCARD, 14 WRITE_ZEROES, 15 LIFETIME,"
        "16 SECURE_ERASE, 17 ZONED, 18 OUT_FUA"
    ),
    "scsi": _bits("0 INOUT, 1 HOTPLUG, 2 CHANGE, 3 T10_PI"),
    "fs": _bits("0 NOTIFICATION"),
    "gpu": _bits("0 VIRGL, 1 EDID, 2 RESOURCE_UUID, 3 RESOURCE_BLOB, 4 CONTEXT_INIT"),
    "input": (),
    "vsock": _bits("0 STREAM, 1 SEQPACKET"),
    "crypto": _bits(
        "0 REVISION_1, 1 CIPHER_STATELESS_MODE, 2 HASH_STATELESS_MODE,"
        "3 MAC_STATELESS_MODE, 4 AEAD_STATELESS_MODE, 5 AKCIPHER_STATELESS_MODE"
    ),
    "gpio": _bits("0 IRQ"),
    "i2c": _bits("0 ZERO_LENGTH_REQUEST"),
    "rng": (),
    "sound": _bits("0 CTLS"),
}
DEVICE_TYPES: tuple[str, ...] = tuple(DEVICE_FEATURES)

# --- virtio device status byte (SET/GET_STATUS) --------------------------------
DEVICE_STATUS: tuple[Bit, ...] = (
    Bit(0, "ACKNOWLEDGE"),
    Bit(1, "DRIVER"),
    Bit(2, "DRIVER_OK"),
    Bit(3, "FEATURES_OK"),
    Bit(6, "NEEDS_RESET"),
    Bit(7, "FAILED"),
)

PROTOCOL_BY_NAME: dict[str, Bit] = {b.name: b for b in PROTOCOL_FEATURES}
for _b in PROTOCOL_FEATURES:
    for _old in _b.old_names:
        PROTOCOL_BY_NAME.setdefault(_old, _b)


def protocol_mask(*names: str) -> int:
    """Mask of the named protocol features (current or old names)."""
    mask = 0
    for name in names:
        mask |= 1 << PROTOCOL_BY_NAME[name].bit
    return mask


def virtio_mask(*names: str, device: str | None = None) -> int:
    """Mask of the named virtio bits: transport bits, or ``device``'s own."""
    by_name = {name: bit for bit, name in virtio_table(device).items()}
    mask = 0
    for name in names:
        mask |= 1 << by_name[name]
    return mask


def virtio_table(device: str | None) -> dict[int, str]:
    """bit -> name for GET/SET_FEATURES, transport bits plus the device's own."""
    table = {b.bit: b.name for b in DEVICE_FEATURES.get(device or "", ())}
    table.update({b.bit: b.name for b in TRANSPORT_FEATURES})
    return table


def bit_names(value: int, table: dict[int, str], unknown: str = "BIT_{}") -> list[str]:
    """Names of the set bits of ``value``, lowest first; unnamed bits as BIT_n."""
    names = []
    bit = 0
    while value:
        if value & 1:
            names.append(table.get(bit) or unknown.format(bit))
        value >>= 1
        bit += 1
    return names


PROTOCOL_TABLE: dict[int, str] = {b.bit: b.name for b in PROTOCOL_FEATURES}
STATUS_TABLE: dict[int, str] = {b.bit: b.name for b in DEVICE_STATUS}


def guess_device(features: int) -> str | None:
    """Best guess of the device type from the back-end's offered virtio bits.

    vhost-user never says which device it serves; the user can say it
    (``--device``).  Without that, a few bits are distinctive enough.
    """
    device_bits = features & 0xFFFFFF
    for device, mask in GUESS_MASKS:
        if device_bits & mask:
            return device
    return None


#: Bits that tell a device type, in the order guess_device checks them (data the
#: generated Lua can take as it is).
GUESS_MASKS = (
    ("net", virtio_mask("MRG_RXBUF", "MAC", "CTRL_VQ", "CSUM", device="net")),
    (
        "blk",
        virtio_mask("SEG_MAX", "BLK_SIZE", "FLUSH", "DISCARD", "WRITE_ZEROES", "MQ", device="blk"),
    ),
)
