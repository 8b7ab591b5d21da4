"""Every vhost-user request as data: ids, names, payloads, replies, fds, gates.

Front-end requests (main socket, ids 1-45) and back-end requests (back-end
channel, ids 1-10) have separate id spaces.  One :class:`RequestSpec` per
request tells the decoder which layout to use for the request and for its
reply (they differ for several messages), when a reply is owed, how many fds
may travel and what they are, and which features the message depends on.
Sources: QEMU ``docs/interop/vhost-user.rst`` and ``hw/virtio/vhost-user.c``
(summarised in ../shared/PROTOCOL.md §2-§3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from . import layouts as L
from .layouts import Layout

ReplyMode = Literal["never", "always", "ack", "flag", "log_shmfd"]
"""When a reply is owed:

* ``always``    – every request gets one reply;
* ``ack``       – only if REPLY_ACK is negotiated and NEED_REPLY is set;
* ``flag``      – whenever NEED_REPLY is set (QEMU sets it unconditionally);
* ``log_shmfd`` – always when LOG_SHMFD is negotiated, else as ``ack``;
* ``never``     – no reply is defined (GPU_SET_SOCKET without REPLY_ACK, ...).
"""

#: The protocol's name in Wireshark: the dissector our captures name (exported PDU) and the
#: prefix of its fields (vhost_user.<name>, the filter's names).
WIRESHARK_NAME = "vhost_user"
#: The header: request (u32) at 0, flags (u32) at 4, payload size (u32) at SIZE_OFFSET.
HEADER_SIZE = 12
SIZE_OFFSET = 8
VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
FLAGS_KNOWN = FLAG_VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY
REPLY_FLAGS = VERSION | FLAG_REPLY  # 0x5: the only reply flags QEMU accepts
#: The protocol's payload limit (rust-vmm's MAX_MSG_SIZE; QEMU's own is 2056): the
#: decoder's framing limit (framing.cut_messages) and the generated Lua's (C.MAX_PAYLOAD).
MAX_PAYLOAD = 4096
#: The proxy's own, larger framing limit (passed by proxy/framing.Framer): the largest
#: payload still forwarded whole as one ``sendmsg`` (GPU cursor updates are ~16 KiB);
#: a header announcing more is taken as a lost stream.  A message forwarded whole above
#: MAX_PAYLOAD is decoded as that message, flagged ``oversize``.
FORWARD_MAX_PAYLOAD = 64 * 1024
#: Buffer large enough for the biggest message the proxy forwards.
MAX_MESSAGE = HEADER_SIZE + FORWARD_MAX_PAYLOAD
MAX_FDS = 8  # per message, VHOST_MEMORY_BASELINE_NREGIONS / VHOST_USER_BACKEND_MAX_FDS
#: Most fds one sendmsg can carry on Linux (SCM_MAX_FD, include/net/scm.h): what a peer
#: can send at all, whatever the protocol allows.
SCM_MAX_FD = 253


@dataclass(frozen=True, slots=True)
class RequestSpec:
    id: int
    name: str
    channel: Literal["main", "backend"]
    request: tuple[Layout, ...]  # alternatives, chosen by size and Layout.when
    reply: tuple[Layout, ...]  # empty when no reply payload is defined
    reply_mode: ReplyMode
    fds: tuple[int, int] = (0, 0)  # min, max fds on the request (-1 max: one per region)
    fd_role: str = ""  # what the request's fds are (kick, guest-memory, ...)
    reply_fds: tuple[int, int] = (0, 0)
    reply_fd_role: str = ""
    needs: tuple[str, ...] = ()  # protocol features the message depends on
    needs_virtio: tuple[str, ...] = ()  # virtio bits (PROTOCOL_FEATURES, ACCESS_PLATFORM)
    old_names: tuple[str, ...] = ()
    doc: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.channel}:{self.name}"


class FrontendRequest(IntEnum):
    """Front-end request ids (main channel) by name: code names a request, never its number."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40
    GET_SHARED_OBJECT = 41
    SET_DEVICE_STATE_FD = 42
    CHECK_DEVICE_STATE = 43
    GET_SHMEM_CONFIG = 44
    GET_VRING_BASE_SKIP_DRAIN = 45


class BackendRequest(IntEnum):
    """Back-end request ids (back-end channel) by name."""

    BACKEND_IOTLB_MSG = 1
    BACKEND_CONFIG_CHANGE_MSG = 2
    BACKEND_VRING_HOST_NOTIFIER_MSG = 3
    BACKEND_VRING_CALL = 4
    BACKEND_VRING_ERR = 5
    BACKEND_SHARED_OBJECT_ADD = 6
    BACKEND_SHARED_OBJECT_REMOVE = 7
    BACKEND_SHARED_OBJECT_LOOKUP = 8
    BACKEND_SHMEM_MAP = 9
    BACKEND_SHMEM_UNMAP = 10


def _spec(channel, request_id: IntEnum, request, reply, mode, **kw) -> RequestSpec:
    req = request if isinstance(request, tuple) else (request,)
    rep = reply if isinstance(reply, tuple) else ((reply,) if reply is not None else ())
    return RequestSpec(int(request_id), request_id.name, channel, req, rep, mode, **kw)


def _fe(*a, **kw) -> RequestSpec:
    return _spec("main", *a, **kw)


def _be(*a, **kw) -> RequestSpec:
    return _spec("backend", *a, **kw)


_MEMTAB = (L.MEM_TABLE, L.MEM_TABLE_XEN, L.POSTCOPY_ACK)
_MEMREG = (L.MEM_REG, L.MEM_REG_XEN, L.POSTCOPY_ACK)

FRONTEND_REQUESTS: tuple[RequestSpec, ...] = (
    _fe(
        FrontendRequest.GET_FEATURES,
        L.EMPTY,
        L.VIRTIO_FEATURES,
        "always",
        doc="back-end's virtio feature bits",
    ),
    _fe(
        FrontendRequest.SET_FEATURES,
        L.VIRTIO_FEATURES,
        L.ACK,
        "ack",
        doc="features acked by the driver",
    ),
    _fe(
        FrontendRequest.SET_OWNER,
        L.EMPTY,
        L.ACK,
        "ack",
        doc="claims the back-end for this front-end",
    ),
    _fe(FrontendRequest.RESET_OWNER, L.EMPTY, L.ACK, "ack", doc="deprecated; QEMU never sends it"),
    _fe(
        FrontendRequest.SET_MEM_TABLE,
        _MEMTAB,
        (L.ACK, L.MEM_TABLE, L.MEM_TABLE_XEN),
        "ack",
        fds=(1, -1),
        fd_role="guest-memory",
        doc="guest memory regions, one fd each",
    ),
    _fe(
        FrontendRequest.SET_LOG_BASE,
        L.LOG,
        (L.EMPTY, L.ACK),
        "log_shmfd",
        fds=(0, 1),
        fd_role="dirty-log",
        doc="dirty log bitmap for migration",
    ),
    _fe(FrontendRequest.SET_LOG_FD, L.EMPTY, L.ACK, "ack", fds=(1, 1), fd_role="log-eventfd"),
    _fe(FrontendRequest.SET_VRING_NUM, L.VRING_NUM, L.ACK, "ack", doc="queue size"),
    _fe(FrontendRequest.SET_VRING_ADDR, L.VRING_ADDR, L.ACK, "ack", doc="ring addresses"),
    _fe(FrontendRequest.SET_VRING_BASE, L.VRING_BASE, L.ACK, "ack", doc="next available index"),
    _fe(
        FrontendRequest.GET_VRING_BASE,
        L.VRING_STATE,
        L.VRING_BASE,
        "always",
        doc="stops the ring and returns its base",
    ),
    _fe(
        FrontendRequest.SET_VRING_KICK,
        L.VRING_FD,
        L.ACK,
        "ack",
        fds=(0, 1),
        fd_role="kick",
        doc="kick eventfd; starts the ring",
    ),
    _fe(FrontendRequest.SET_VRING_CALL, L.VRING_FD, L.ACK, "ack", fds=(0, 1), fd_role="call"),
    _fe(FrontendRequest.SET_VRING_ERR, L.VRING_FD, L.ACK, "ack", fds=(0, 1), fd_role="err"),
    _fe(
        FrontendRequest.GET_PROTOCOL_FEATURES,
        L.EMPTY,
        L.PROTOCOL_FEATURES,
        "always",
        needs_virtio=("PROTOCOL_FEATURES",),
    ),
    _fe(
        FrontendRequest.SET_PROTOCOL_FEATURES,
        L.PROTOCOL_FEATURES,
        L.ACK,
        "ack",
        needs_virtio=("PROTOCOL_FEATURES",),
    ),
    _fe(FrontendRequest.GET_QUEUE_NUM, L.EMPTY, L.QUEUE_NUM, "always", needs=("MQ",)),
    _fe(
        FrontendRequest.SET_VRING_ENABLE,
        L.VRING_ENABLE,
        L.ACK,
        "ack",
        needs_virtio=("PROTOCOL_FEATURES",),
    ),
    _fe(FrontendRequest.SEND_RARP, L.RARP, L.ACK, "ack", needs=("RARP",)),
    _fe(FrontendRequest.NET_SET_MTU, L.MTU, L.ACK, "ack", needs=("NET_MTU",)),
    _fe(
        FrontendRequest.SET_BACKEND_REQ_FD,
        L.EMPTY,
        L.ACK,
        "ack",
        fds=(1, 1),
        fd_role="backend-channel",
        needs=("BACKEND_REQ",),
        old_names=("SET_SLAVE_REQ_FD",),
    ),
    _fe(FrontendRequest.IOTLB_MSG, L.IOTLB, L.ACK, "always", needs_virtio=("ACCESS_PLATFORM",)),
    _fe(FrontendRequest.SET_VRING_ENDIAN, L.VRING_ENDIAN, L.ACK, "ack", needs=("CROSS_ENDIAN",)),
    _fe(FrontendRequest.GET_CONFIG, L.CONFIG, L.CONFIG, "always", needs=("CONFIG",)),
    _fe(FrontendRequest.SET_CONFIG, L.CONFIG, L.ACK, "ack", needs=("CONFIG",)),
    _fe(
        FrontendRequest.CREATE_CRYPTO_SESSION,
        (L.CRYPTO_ASYM, L.CRYPTO_SYM, L.CRYPTO_OLD),
        (L.CRYPTO_ASYM, L.CRYPTO_SYM, L.CRYPTO_OLD),
        "always",
        needs=("CRYPTO_SESSION",),
    ),
    _fe(
        FrontendRequest.CLOSE_CRYPTO_SESSION, L.SESSION_ID, L.ACK, "ack", needs=("CRYPTO_SESSION",)
    ),
    _fe(
        FrontendRequest.POSTCOPY_ADVISE,
        L.EMPTY,
        L.EMPTY,
        "always",
        reply_fds=(1, 1),
        reply_fd_role="userfaultfd",
        needs=("PAGEFAULT",),
    ),
    _fe(FrontendRequest.POSTCOPY_LISTEN, L.EMPTY, L.ACK, "flag", needs=("PAGEFAULT",)),
    _fe(FrontendRequest.POSTCOPY_END, L.EMPTY, L.ACK, "always", needs=("PAGEFAULT",)),
    _fe(
        FrontendRequest.GET_INFLIGHT_FD,
        L.INFLIGHT,
        L.INFLIGHT,
        "always",
        reply_fds=(0, 1),
        reply_fd_role="inflight",
        needs=("INFLIGHT_SHMFD",),
    ),
    _fe(
        FrontendRequest.SET_INFLIGHT_FD,
        L.INFLIGHT,
        L.ACK,
        "ack",
        fds=(1, 1),
        fd_role="inflight",
        needs=("INFLIGHT_SHMFD",),
    ),
    _fe(FrontendRequest.GPU_SET_SOCKET, L.EMPTY, L.ACK, "ack", fds=(1, 1), fd_role="gpu-socket"),
    _fe(FrontendRequest.RESET_DEVICE, L.EMPTY, L.ACK, "ack", needs=("RESET_DEVICE",)),
    _fe(FrontendRequest.VRING_KICK, L.VRING_STATE, L.ACK, "ack", needs=("INBAND_NOTIFICATIONS",)),
    _fe(
        FrontendRequest.GET_MAX_MEM_SLOTS,
        L.EMPTY,
        L.MEM_SLOTS,
        "always",
        needs=("CONFIGURE_MEM_SLOTS",),
    ),
    _fe(
        FrontendRequest.ADD_MEM_REG,
        _MEMREG,
        (L.ACK, L.MEM_REG, L.MEM_REG_XEN),
        "ack",
        fds=(1, 1),
        fd_role="guest-memory",
        needs=("CONFIGURE_MEM_SLOTS",),
    ),
    _fe(
        FrontendRequest.REM_MEM_REG,
        (L.MEM_REG, L.MEM_REG_XEN),
        L.ACK,
        "ack",
        fds=(0, 1),
        fd_role="guest-memory (back-end closes it)",
        needs=("CONFIGURE_MEM_SLOTS",),
    ),
    _fe(FrontendRequest.SET_STATUS, L.STATUS, L.ACK, "ack", needs=("STATUS",)),
    _fe(FrontendRequest.GET_STATUS, L.EMPTY, L.STATUS, "always", needs=("STATUS",)),
    _fe(
        FrontendRequest.GET_SHARED_OBJECT,
        L.SHARED,
        (L.SHARED, L.ACK),
        "always",
        reply_fds=(0, 1),
        reply_fd_role="dmabuf",
        needs=("SHARED_OBJECT",),
    ),
    _fe(
        FrontendRequest.SET_DEVICE_STATE_FD,
        L.DEVICE_STATE,
        L.DEVICE_STATE_RESULT,
        "always",
        fds=(1, 1),
        fd_role="device-state",
        reply_fds=(0, 1),
        reply_fd_role="device-state",
        needs=("DEVICE_STATE",),
    ),
    _fe(FrontendRequest.CHECK_DEVICE_STATE, L.EMPTY, L.ACK, "always", needs=("DEVICE_STATE",)),
    _fe(FrontendRequest.GET_SHMEM_CONFIG, L.EMPTY, L.SHMEM_CONFIG, "always", needs=("SHMEM",)),
    _fe(
        FrontendRequest.GET_VRING_BASE_SKIP_DRAIN,
        L.VRING_STATE,
        L.VRING_BASE,
        "always",
        needs=("GET_VRING_BASE_SKIP_DRAIN",),
    ),
)

BACKEND_REQUESTS: tuple[RequestSpec, ...] = (
    _be(
        BackendRequest.BACKEND_IOTLB_MSG,
        L.IOTLB,
        L.ACK,
        "ack",
        needs_virtio=("ACCESS_PLATFORM",),
        old_names=("SLAVE_IOTLB_MSG",),
    ),
    _be(
        BackendRequest.BACKEND_CONFIG_CHANGE_MSG,
        L.EMPTY,
        L.ACK,
        "ack",
        needs=("CONFIG",),
        old_names=("SLAVE_CONFIG_CHANGE_MSG",),
    ),
    _be(
        BackendRequest.BACKEND_VRING_HOST_NOTIFIER_MSG,
        L.VRING_AREA,
        L.ACK,
        "ack",
        fds=(0, 1),
        fd_role="host-notifier",
        needs=("HOST_NOTIFIER",),
        old_names=("SLAVE_VRING_HOST_NOTIFIER_MSG",),
    ),
    _be(
        BackendRequest.BACKEND_VRING_CALL,
        L.VRING_STATE,
        L.ACK,
        "ack",
        needs=("INBAND_NOTIFICATIONS",),
        old_names=("SLAVE_VRING_CALL",),
    ),
    _be(
        BackendRequest.BACKEND_VRING_ERR,
        L.VRING_STATE,
        L.ACK,
        "ack",
        needs=("INBAND_NOTIFICATIONS",),
        old_names=("SLAVE_VRING_ERR",),
    ),
    _be(BackendRequest.BACKEND_SHARED_OBJECT_ADD, L.SHARED, L.ACK, "ack", needs=("SHARED_OBJECT",)),
    _be(
        BackendRequest.BACKEND_SHARED_OBJECT_REMOVE,
        L.SHARED,
        L.ACK,
        "ack",
        needs=("SHARED_OBJECT",),
    ),
    _be(
        BackendRequest.BACKEND_SHARED_OBJECT_LOOKUP,
        L.SHARED,
        L.ACK,
        "always",
        reply_fds=(0, 1),
        reply_fd_role="dmabuf",
        needs=("SHARED_OBJECT",),
    ),
    _be(
        BackendRequest.BACKEND_SHMEM_MAP,
        L.SHMEM_MAP,
        L.ACK,
        "ack",
        fds=(1, 1),
        fd_role="shmem-map",
        needs=("SHMEM", "BACKEND_SEND_FD"),
    ),
    _be(BackendRequest.BACKEND_SHMEM_UNMAP, L.SHMEM_MAP, L.ACK, "ack", needs=("SHMEM",)),
)

FRONTEND: dict[int, RequestSpec] = {s.id: s for s in FRONTEND_REQUESTS}
BACKEND: dict[int, RequestSpec] = {s.id: s for s in BACKEND_REQUESTS}
BY_CHANNEL: dict[str, dict[int, RequestSpec]] = {"main": FRONTEND, "backend": BACKEND}


def lookup(channel: str, request: int) -> RequestSpec | None:
    """The spec of ``request`` on ``channel`` ('main' or 'backend'), or None."""
    return BY_CHANNEL.get(channel, FRONTEND).get(request)


def by_name(name: str) -> RequestSpec | None:
    """Find a request by current or old name (``SET_SLAVE_REQ_FD`` works too)."""
    key = name.upper().removeprefix("VHOST_USER_")
    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS):
        if key == spec.name or key in spec.old_names:
            return spec
    return None


def request_name(channel: str, request: int) -> str:
    spec = lookup(channel, request)
    if spec:
        return spec.name
    return f"UNKNOWN_{request}" if channel == "main" else f"BACKEND_UNKNOWN_{request}"


#: What a request's or reply's fds are (RequestSpec.fd_role/reply_fd_role): the decoder
#: labels each fd description with it, ``"kick: eventfd"``.
FD_ROLES: frozenset[str] = frozenset(
    role
    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS)
    for role in (spec.fd_role, spec.reply_fd_role)
    if role
)


def split_fd_role(desc: str) -> tuple[str, str]:
    """``("kick", "eventfd")`` from a labelled fd description, ``("", desc)`` from another."""
    role, sep, what = desc.partition(": ")
    return (role, what) if sep and role in FD_ROLES else ("", desc)


#: The id enum of each channel (the tables above are written with its members).
REQUEST_ENUMS: dict[str, type[IntEnum]] = {"main": FrontendRequest, "backend": BackendRequest}
