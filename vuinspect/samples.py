"""Hand-made frame sequences: a full device lifecycle and every message in the tables.

Real captures from QEMU and real back-ends live in ``captures/``; these
synthetic ones cover what real programs rarely send (every request id, every
reply layout) and give tests a known, deterministic lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .encode import build, encode_layout, message
from .frames import Channel, Direction, Frame, event_frame
from .protocol import features as F
from .protocol.layouts import Layout
from .protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS, RequestSpec
from .protocol.requests import BackendRequest as BE
from .protocol.requests import FrontendRequest as FE
from .rule_ops import expected_fds

T0 = 1_764_000_000_123_456_789  # a fixed epoch in ns, so generated captures are reproducible

_BLK_ACK = ("VERSION_1", "PROTOCOL_FEATURES", "RING_EVENT_IDX", "SEG_MAX", "FLUSH", "BLK_SIZE")
VIRTIO_OFFER = F.virtio_mask(*_BLK_ACK, "RING_INDIRECT_DESC", "MQ", "SIZE_MAX", device="blk")
VIRTIO_ACK = F.virtio_mask(*_BLK_ACK, device="blk")
_SPDK_ACK = ("MQ", "LOG_SHMFD", "REPLY_ACK", "BACKEND_REQ", "CONFIG", "INFLIGHT_SHMFD")
#: SPDK's set
PROTOCOL_OFFER = F.protocol_mask(
    *_SPDK_ACK, "RARP", "NET_MTU", "CRYPTO_SESSION", "BACKEND_SEND_FD", "HOST_NOTIFIER"
)
PROTOCOL_ACK = F.protocol_mask(*_SPDK_ACK)


class _Clock:
    def __init__(self, start: int = T0, step: int = 25_000) -> None:
        self.t = start
        self.step = step

    def __call__(self) -> int:
        self.t += self.step
        return self.t


def device_start(
    conn: int = 1, queues: int = 2, label: str = "/run/vhost/blk0.sock", t0: int = T0
) -> list[Frame]:
    """A vhost-user-blk start and stop as QEMU 7.2 + qemu-storage-daemon do it."""
    clock = _Clock(t0)
    out: list[Frame] = [
        event_frame(
            "open",
            clock(),
            conn,
            {
                "label": label,
                "listen": label + ".proxy",
                "connect": label,
                "orientation": "frontend-connects",
                "device": "blk",
                "byteorder": "little",
            },
        )
    ]

    def req(
        r: int,
        values: dict[str, Any] | None = None,
        fds: tuple[str, ...] = (),
        need_reply: bool = False,
        channel: Channel = "main",
    ) -> None:
        d: Direction = "f2b" if channel == "main" else "b2f"
        out.append(
            Frame(clock(), conn, channel, d, build(channel, r, values, need_reply=need_reply), fds)
        )

    def rep(
        r: int,
        values: dict[str, Any] | None = None,
        fds: tuple[str, ...] = (),
        channel: Channel = "main",
        layout: str | None = None,
    ) -> None:
        d: Direction = "b2f" if channel == "main" else "f2b"
        out.append(
            Frame(
                clock(), conn, channel, d, build(channel, r, values, reply=True, layout=layout), fds
            )
        )

    def ack(r: int) -> None:
        rep(r, {"result": 0}, layout="ack")

    req(FE.GET_FEATURES)
    rep(FE.GET_FEATURES, {"features": VIRTIO_OFFER})
    req(FE.GET_PROTOCOL_FEATURES)
    rep(FE.GET_PROTOCOL_FEATURES, {"features": PROTOCOL_OFFER})
    req(FE.SET_PROTOCOL_FEATURES, {"features": PROTOCOL_ACK}, need_reply=True)
    ack(FE.SET_PROTOCOL_FEATURES)
    req(FE.GET_QUEUE_NUM)
    rep(FE.GET_QUEUE_NUM, {"num_queues": queues})
    req(FE.SET_BACKEND_REQ_FD, fds=("socket:[4711]",), need_reply=True)
    ack(FE.SET_BACKEND_REQ_FD)
    req(FE.SET_OWNER, need_reply=True)
    ack(FE.SET_OWNER)
    req(FE.GET_FEATURES)
    rep(FE.GET_FEATURES, {"features": VIRTIO_OFFER})
    for q in range(queues):
        req(FE.SET_VRING_CALL, {"index": q}, fds=("eventfd",), need_reply=True)
        ack(FE.SET_VRING_CALL)
        req(FE.SET_VRING_ERR, {"index": q}, fds=("eventfd",), need_reply=True)
        ack(FE.SET_VRING_ERR)
    req(FE.GET_CONFIG, {"offset": 0, "size": 60, "flags": 0, "data": "00" * 60})
    rep(
        FE.GET_CONFIG,
        {"offset": 0, "size": 60, "flags": 0, "data": ("00" * 8 + "0002" + "00" * 50)},
    )
    req(FE.SET_FEATURES, {"features": VIRTIO_ACK}, need_reply=True)
    ack(FE.SET_FEATURES)
    req(
        FE.GET_INFLIGHT_FD,
        {"mmap_size": 0, "mmap_offset": 0, "num_queues": queues, "queue_size": 128},
    )
    rep(
        FE.GET_INFLIGHT_FD,
        {"mmap_size": 8448, "mmap_offset": 0, "num_queues": queues, "queue_size": 128},
        fds=("memfd:vhost-inflight size=8KiB",),
    )
    req(
        FE.SET_INFLIGHT_FD,
        {"mmap_size": 8448, "mmap_offset": 0, "num_queues": queues, "queue_size": 128},
        fds=("memfd:vhost-inflight size=8KiB",),
        need_reply=True,
    )
    ack(FE.SET_INFLIGHT_FD)
    regions = [
        {
            "guest_phys_addr": 0,
            "memory_size": 0xC0000,
            "userspace_addr": 0x7F5A40000000,
            "mmap_offset": 0,
        },
        {
            "guest_phys_addr": 0x100000,
            "memory_size": 0xFF00000,
            "userspace_addr": 0x7F5A40100000,
            "mmap_offset": 0x100000,
        },
    ]
    mem = "memfd:mem size=256MiB"
    req(FE.SET_MEM_TABLE, {"regions": regions}, fds=(mem, mem), need_reply=True)
    ack(FE.SET_MEM_TABLE)
    for q in range(queues):
        base = 0x7F5A4F000000 + q * 0x10000
        req(FE.SET_VRING_NUM, {"index": q, "num": 128}, need_reply=True)
        ack(FE.SET_VRING_NUM)
        req(FE.SET_VRING_BASE, {"index": q, "num": 0}, need_reply=True)
        ack(FE.SET_VRING_BASE)
        req(
            FE.SET_VRING_ADDR,
            {
                "index": q,
                "flags": 0,
                "desc": base,
                "used": base + 0x1000,
                "avail": base + 0x800,
                "log": 0,
            },
            need_reply=True,
        )
        ack(FE.SET_VRING_ADDR)
        req(FE.SET_VRING_KICK, {"index": q}, fds=("eventfd",), need_reply=True)
        ack(FE.SET_VRING_KICK)
        req(FE.SET_VRING_CALL, {"index": q}, fds=("eventfd",), need_reply=True)
        ack(FE.SET_VRING_CALL)
    for q in range(queues):
        req(FE.SET_VRING_ENABLE, {"index": q, "num": 1}, need_reply=True)
        ack(FE.SET_VRING_ENABLE)
    # the back-end announces a config change on the back-end channel
    req(BE.BACKEND_CONFIG_CHANGE_MSG, channel="backend", need_reply=True)
    rep(BE.BACKEND_CONFIG_CHANGE_MSG, {"result": 0}, channel="backend")
    req(FE.GET_CONFIG, {"offset": 0, "size": 60, "flags": 0, "data": "00" * 60})
    rep(
        FE.GET_CONFIG,
        {"offset": 0, "size": 60, "flags": 0, "data": ("00" * 8 + "0002" + "00" * 50)},
    )
    # stop
    for q in range(queues):
        req(FE.SET_VRING_ENABLE, {"index": q, "num": 0}, need_reply=True)
        ack(FE.SET_VRING_ENABLE)
        req(FE.GET_VRING_BASE, {"index": q, "num": 0})
        rep(FE.GET_VRING_BASE, {"index": q, "num": 37 + q})
    out.append(
        event_frame(
            "close", clock(), conn, {"reason": "front-end closed the connection", "by": "frontend"}
        )
    )
    return out


VIRTIO_ALL = VIRTIO_OFFER | F.virtio_mask("ACCESS_PLATFORM", "RING_PACKED")
#: Every protocol feature but XEN_MMAP.
PROTOCOL_ALL = F.protocol_mask(*(n for n in F.PROTOCOL_TABLE.values() if n != "XEN_MMAP"))


def every_message(conn: int = 1, t0: int = T0) -> list[Frame]:
    """Every request of both channels and every reply layout alternative, each paired.

    Connection ``conn`` negotiates every feature but XEN_MMAP; connection
    ``conn + 1`` negotiates XEN_MMAP and carries the Xen memory layouts.
    """
    clock = _Clock(t0, 10_000)
    out: list[Frame] = []
    overrides = {
        "virtio_features": {"features": VIRTIO_ALL},
        "protocol_features": {"features": PROTOCOL_ALL},
    }
    xen_conn = conn + 1
    for c, xen in ((conn, False), (xen_conn, True)):
        out.append(
            event_frame(
                "open",
                clock(),
                c,
                {
                    "label": f"synthetic{'-xen' if xen else ''}",
                    "orientation": "frontend-connects",
                    "device": "blk",
                    "byteorder": "little",
                },
            )
        )
        feats = PROTOCOL_ALL | F.protocol_mask("XEN_MMAP") if xen else PROTOCOL_ALL
        for r, values in (
            (FE.GET_FEATURES, None),
            (FE.GET_PROTOCOL_FEATURES, None),
            (FE.SET_PROTOCOL_FEATURES, {"features": feats}),
            (FE.SET_FEATURES, {"features": VIRTIO_ALL}),
        ):
            out.append(Frame(clock(), c, "main", "f2b", build("main", r, values)))
            if r in (FE.GET_FEATURES, FE.GET_PROTOCOL_FEATURES):
                rv = {"features": VIRTIO_ALL} if r == FE.GET_FEATURES else {"features": feats}
                out.append(Frame(clock(), c, "main", "b2f", build("main", r, rv, reply=True)))
        if not xen:  # start vring 1 so that GET_VRING_BASE stops a started ring
            out.append(
                Frame(
                    clock(),
                    c,
                    "main",
                    "f2b",
                    build("main", FE.SET_VRING_KICK, {"index": 1}),
                    ("eventfd",),
                )
            )
    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS):
        req_dir: Direction = "f2b" if spec.channel == "main" else "b2f"
        rep_dir: Direction = "b2f" if spec.channel == "main" else "f2b"
        alternatives = list(spec.request)
        replies: list[Layout | None] = list(spec.reply) or [None]
        for i in range(max(len(alternatives), len(replies))):
            lay = alternatives[min(i, len(alternatives) - 1)]
            rl = replies[min(i, len(replies) - 1)]
            xen = "xen" in lay.name or (rl is not None and "xen" in rl.name)
            c = xen_conn if xen else conn
            values = overrides.get(lay.name) or _sample_values(lay.name)
            n_fds = _fd_count(spec, values, lay.name)
            data = message(
                spec.id, encode_layout(lay, values), need_reply=spec.reply_mode != "always"
            )
            out.append(
                Frame(
                    clock(),
                    c,
                    spec.channel,
                    req_dir,
                    data,
                    tuple(f"eventfd#{k}" for k in range(n_fds)),
                )
            )
            rvalues = (overrides.get(rl.name) or _sample_values(rl.name)) if rl is not None else {}
            rdata = message(
                spec.id, encode_layout(rl, rvalues) if rl is not None else b"", reply=True
            )
            out.append(
                Frame(
                    clock(),
                    c,
                    spec.channel,
                    rep_dir,
                    rdata,
                    tuple("memfd:x size=4KiB" for _ in range(spec.reply_fds[0])),
                )
            )
    return out


def _fd_count(spec: RequestSpec, values: dict[str, Any], layout: str) -> int:
    """As many fds as the checks expect: the fewest, but a vring area's optional fd."""
    lo, hi = expected_fds(spec.fds, layout, values)
    return hi if layout == "vring_area" else lo


_REGION = {
    "guest_phys_addr": 0x100000,
    "memory_size": 0x4000000,
    "userspace_addr": 0x7F0000100000,
    "mmap_offset": 0x100000,
}
_XEN = {"xen_mmap_flags": 0x1, "domid": 7}


def _sample_values(layout: str) -> dict[str, Any]:
    """Plausible field values per layout name (non-zero where a zero would hide bugs)."""
    samples: dict[str, dict[str, Any]] = {
        "virtio_features": {"features": VIRTIO_OFFER},
        "protocol_features": {"features": PROTOCOL_OFFER},
        "u64": {"value": 0x1234},
        "ack": {"result": 0},
        "queue_num": {"num_queues": 4},
        "mem_slots": {"slots": 509},
        "status": {"status": 0x0F},
        "mtu": {"mtu": 1500},
        "rarp": {"mac": "52:54:00:12:34:56"},
        "session_id": {"session_id": 3},
        "postcopy_ack": {"result": 0},
        "vring_fd": {"index": 1},
        "vring_state": {"index": 1, "num": 0},
        "vring_num": {"index": 1, "num": 256},
        "vring_base": {"index": 1, "num": 0x2A},
        "vring_enable": {"index": 1, "num": 1},
        "vring_endian": {"index": 1, "num": 1},
        "vring_addr": {
            "index": 1,
            "flags": 1,
            "desc": 0x7F0000001000,
            "used": 0x7F0000002000,
            "avail": 0x7F0000003000,
            "log": 0x3000,
        },
        "mem_table": {"regions": [_REGION, dict(_REGION, guest_phys_addr=0x8000000)]},
        "mem_table_xen": {"regions": [dict(_REGION, **_XEN)]},
        "mem_reg": dict(_REGION),
        "mem_reg_xen": dict(_REGION, **_XEN),
        "log": {"mmap_size": 0x2000, "mmap_offset": 0},
        "iotlb": {"iova": 0x10000, "size": 0x1000, "uaddr": 0x7F0000010000, "perm": 3, "type": 2},
        "config": {"offset": 0, "size": 8, "flags": 0, "data": "0001020304050607"},
        "vring_area": {"index": 2, "nofd": False, "size": 4096, "offset": 0},
        "shared": {"uuid": "12345678-9abc-def0-1234-56789abcdef0"},
        "shmem_map": {
            "shmid": 1,
            "fd_offset": 0x1000,
            "shm_offset": 0x2000,
            "len": 0x4000,
            "flags": 1,
        },
        "shmem_config": {
            "nregions": 2,
            "memory_sizes": [{"size": 0x100000}, {"size": 0x200000}] + [{"size": 0}] * 254,
        },
        "inflight": {"mmap_size": 8448, "mmap_offset": 0, "num_queues": 4, "queue_size": 128},
        "device_state": {"direction": 0, "phase": 0},
        "device_state_result": {"error": 0, "no_fd": True},
        "crypto_session_sym": {
            "op_code": 0x002,
            "cipher_alg": 1,
            "key_len": 16,
            "key": "11" * 16,
            "session_id": 5,
        },
        "crypto_session_asym": {
            "op_code": 0x404,
            "algo": 1,
            "keytype": 1,
            "keylen": 32,
            "key": "22" * 32,
            "session_id": 6,
        },
        "crypto_session_old": {"session_id": 7, "cipher_alg": 1, "key_len": 16, "key": "33" * 16},
    }
    return dict(samples.get(layout, {}))


def every_message_stream() -> Iterator[Frame]:
    yield from every_message()
