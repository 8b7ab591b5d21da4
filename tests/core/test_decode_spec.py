"""Decode hand-built messages for every request id and reply.

Payload bytes are packed here with ``struct`` straight from the spec's layout
tables (docs/interop/vhost-user.rst; ../shared/PROTOCOL.md §4), never with the
project's encoder, so the decoder is checked against the spec, not itself.
"""

from __future__ import annotations

import struct
import uuid

import pytest

from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol import requests

Q = struct.Struct("<Q").pack
REGION = struct.pack("<QQQQ", 0x100000, 0x8000000, 0x7F0000100000, 0x100000)
REGION_XEN = REGION + struct.pack("<II", 0x101, 7)
UUID = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")


def hdr(req: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("<III", req, flags, len(payload)) + payload


def decode(
    channel: str,
    req: int,
    payload: bytes,
    *,
    reply: bool,
    fds: int = 0,
    pre: list[tuple[int, bytes, bytes]] | None = None,
):
    """Decode one request (or request+reply) on a fresh pipeline; return the last message."""
    p = Pipeline(device="blk")
    t = 1_000
    req_dir, rep_dir = ("f2b", "b2f") if channel == "main" else ("b2f", "f2b")
    for r, qb, rb in pre or []:  # negotiation that the message needs
        t += 1
        p.feed(Frame(t, 1, "main", "f2b", hdr(r, 1, qb)))
        if rb is not None:
            t += 1
            p.feed(Frame(t, 1, "main", "b2f", hdr(r, 5, rb)))
    fd_list = tuple(f"eventfd#{i}" for i in range(fds))
    if reply:
        t += 1
        p.feed(Frame(t, 1, channel, req_dir, hdr(req, 1, b"")))
        msgs = p.feed(Frame(t + 1000, 1, channel, rep_dir, hdr(req, 5, payload), fd_list))
    else:
        msgs = p.feed(Frame(t + 1, 1, channel, req_dir, hdr(req, 1, payload), fd_list))
    assert len(msgs) == 1
    return msgs[0]


# (channel, id, reply?, payload, fds, expected payload subset, layout)
CASES = [
    ("main", 1, False, b"", 0, {}, "empty"),
    (
        "main",
        1,
        True,
        Q(0x140000000),
        0,
        {"features": 0x140000000, "features_names": ["PROTOCOL_FEATURES", "VERSION_1"]},
        "virtio_features",
    ),
    (
        "main",
        2,
        False,
        Q(1 << 32 | 1 << 9),
        0,
        {"features_names": ["FLUSH", "VERSION_1"]},
        "virtio_features",
    ),
    ("main", 2, True, Q(0), 0, {"result": 0}, "ack"),
    ("main", 3, False, b"", 0, {}, "empty"),
    ("main", 4, False, b"", 0, {}, "empty"),
    (
        "main",
        5,
        False,
        struct.pack("<II", 2, 0) + REGION + REGION,
        2,
        {
            "nregions": 2,
            "regions": [
                {
                    "guest_phys_addr": 0x100000,
                    "memory_size": 0x8000000,
                    "userspace_addr": 0x7F0000100000,
                    "mmap_offset": 0x100000,
                }
            ]
            * 2,
        },
        "mem_table",
    ),
    ("main", 5, True, Q(0), 0, {"result": 0}, "ack"),
    ("main", 5, True, struct.pack("<II", 1, 0) + REGION, 0, {"nregions": 1}, "mem_table"),
    (
        "main",
        6,
        False,
        struct.pack("<QQ", 0x4000, 0),
        1,
        {"mmap_size": 0x4000, "mmap_offset": 0},
        "log",
    ),
    ("main", 6, True, b"", 0, {}, "empty"),
    ("main", 7, False, b"", 1, {}, "empty"),
    ("main", 8, False, struct.pack("<II", 1, 256), 0, {"index": 1, "num": 256}, "vring_num"),
    (
        "main",
        9,
        False,
        struct.pack("<IIQQQQ", 1, 1, 0x1000, 0x2000, 0x3000, 0x4000),
        0,
        {"index": 1, "flags": 1, "log": 0x4000, "desc": 0x1000, "used": 0x2000, "avail": 0x3000},
        "vring_addr",
    ),
    (
        "main",
        10,
        False,
        struct.pack("<II", 0, 0x1234),
        0,
        {"index": 0, "num": 0x1234, "avail_idx": 0x1234},
        "vring_base",
    ),
    ("main", 11, False, struct.pack("<II", 2, 0), 0, {"index": 2, "num": 0}, "vring_state"),
    (
        "main",
        11,
        True,
        struct.pack("<II", 2, 77),
        0,
        {"index": 2, "num": 77, "avail_idx": 77},
        "vring_base",
    ),
    ("main", 12, False, Q(0x1), 1, {"index": 1, "nofd": False}, "vring_fd"),
    ("main", 12, False, Q(0x101), 0, {"index": 1, "nofd": True}, "vring_fd"),
    ("main", 13, False, Q(0x3), 1, {"index": 3, "nofd": False}, "vring_fd"),
    ("main", 14, False, Q(0x0), 1, {"index": 0}, "vring_fd"),
    ("main", 15, False, b"", 0, {}, "empty"),
    ("main", 15, True, Q(0x9), 0, {"features_names": ["MQ", "REPLY_ACK"]}, "protocol_features"),
    (
        "main",
        16,
        False,
        Q(1 << 5 | 1 << 10),
        0,
        {"features_names": ["BACKEND_REQ", "BACKEND_SEND_FD"]},
        "protocol_features",
    ),
    ("main", 17, True, Q(4), 0, {"num_queues": 4}, "queue_num"),
    (
        "main",
        18,
        False,
        struct.pack("<II", 1, 1),
        0,
        {"index": 1, "num": 1, "num_name": "enable"},
        "vring_enable",
    ),
    (
        "main",
        19,
        False,
        bytes.fromhex("525400123456") + b"\0\0",
        0,
        {"mac": "52:54:00:12:34:56"},
        "rarp",
    ),
    ("main", 20, False, Q(9000), 0, {"mtu": 9000}, "mtu"),
    ("main", 21, False, b"", 1, {}, "empty"),
    (
        "main",
        22,
        False,
        struct.pack("<QQQBB6x", 0x10000, 0x1000, 0x7F00, 3, 2),
        0,
        {
            "iova": 0x10000,
            "size": 0x1000,
            "uaddr": 0x7F00,
            "perm_name": "RW",
            "type_name": "UPDATE",
        },
        "iotlb",
    ),
    ("main", 22, True, Q(0), 0, {"result": 0}, "ack"),
    ("main", 23, False, struct.pack("<II", 0, 1), 0, {"num_name": "big-endian"}, "vring_endian"),
    (
        "main",
        24,
        False,
        struct.pack("<III", 0, 4, 0) + bytes(4),
        0,
        {"offset": 0, "size": 4, "flags_name": "FRONTEND", "data": "00000000"},
        "config",
    ),
    (
        "main",
        24,
        True,
        struct.pack("<III", 0, 4, 0) + b"\x01\x02\x03\x04",
        0,
        {"size": 4, "data": "01020304"},
        "config",
    ),
    (
        "main",
        25,
        False,
        struct.pack("<III", 8, 2, 1) + b"\xaa\xbb",
        0,
        {"offset": 8, "size": 2, "flags_name": "MIGRATION", "data": "aabb"},
        "config",
    ),
    (
        "main",
        26,
        False,
        struct.pack(
            "<QIIIIIIBBBB4xQQ64s512s432xq",
            0x002,
            1,
            16,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            b"k" * 16,
            b"",
            9,
        ),
        0,
        {"op_code_name": "CIPHER_CREATE_SESSION", "cipher_alg": 1, "key_len": 16, "session_id": 9},
        "crypto_session_sym",
    ),
    (
        "main",
        26,
        True,
        struct.pack("<QIII4xQII1024sq", 0x404, 1, 1, 32, 0, 1, 2, b"", 11),
        0,
        {
            "op_code_name": "AKCIPHER_CREATE_SESSION",
            "keylen": 32,
            "session_id": 11,
            "rsa_padding_algo": 1,
        },
        "crypto_session_asym",
    ),
    (
        "main",
        26,
        False,
        struct.pack("<qIIIIIIBBBB20x64s512s", 5, 1, 16, 0, 0, 0, 0, 1, 0, 0, 0, b"", b""),
        0,
        {"session_id": 5, "key_len": 16},
        "crypto_session_old",
    ),
    ("main", 27, False, struct.pack("<q", 5), 0, {"session_id": 5}, "session_id"),
    ("main", 28, False, b"", 0, {}, "empty"),
    ("main", 28, True, b"", 1, {}, "empty"),
    ("main", 29, False, b"", 0, {}, "empty"),
    ("main", 30, True, Q(0), 0, {"result": 0}, "ack"),
    (
        "main",
        31,
        False,
        struct.pack("<QQHH4x", 0, 0, 2, 128),
        0,
        {"mmap_size": 0, "num_queues": 2, "queue_size": 128},
        "inflight",
    ),
    ("main", 31, True, struct.pack("<QQHH4x", 8448, 0, 2, 128), 1, {"mmap_size": 8448}, "inflight"),
    (
        "main",
        32,
        False,
        struct.pack("<QQHH4x", 8448, 0, 2, 128),
        1,
        {"mmap_size": 8448},
        "inflight",
    ),
    ("main", 33, False, b"", 1, {}, "empty"),
    ("main", 34, False, b"", 0, {}, "empty"),
    ("main", 35, False, struct.pack("<II", 1, 0), 0, {"index": 1}, "vring_state"),
    ("main", 36, True, Q(509), 0, {"slots": 509}, "mem_slots"),
    (
        "main",
        37,
        False,
        bytes(8) + REGION,
        1,
        {"guest_phys_addr": 0x100000, "memory_size": 0x8000000},
        "mem_reg",
    ),
    ("main", 37, True, bytes(8) + REGION, 0, {"userspace_addr": 0x7F0000100000}, "mem_reg"),
    ("main", 38, False, bytes(8) + REGION, 0, {"mmap_offset": 0x100000}, "mem_reg"),
    (
        "main",
        39,
        False,
        Q(0x0F),
        0,
        {"status": 0xF, "status_names": ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK"]},
        "status",
    ),
    (
        "main",
        40,
        True,
        Q(0x8B),
        0,
        {"status_names": ["ACKNOWLEDGE", "DRIVER", "FEATURES_OK", "FAILED"]},
        "status",
    ),
    ("main", 41, False, UUID.bytes, 0, {"uuid": str(UUID)}, "shared"),
    ("main", 41, True, UUID.bytes, 1, {"uuid": str(UUID)}, "shared"),
    (
        "main",
        42,
        False,
        struct.pack("<II", 1, 0),
        1,
        {"direction_name": "LOAD", "phase_name": "STOPPED"},
        "device_state",
    ),
    ("main", 42, True, Q(0x100), 0, {"error": 0, "no_fd": True}, "device_state_result"),
    ("main", 43, True, Q(0), 0, {"result": 0}, "ack"),
    (
        "main",
        44,
        True,
        struct.pack("<II", 1, 0) + Q(0x200000) + bytes(8 * 255),
        0,
        {"nregions": 1},
        "shmem_config",
    ),
    ("main", 45, False, struct.pack("<II", 0, 0), 0, {"index": 0}, "vring_state"),
    ("main", 45, True, struct.pack("<II", 0, 5), 0, {"num": 5}, "vring_base"),
    (
        "backend",
        1,
        False,
        struct.pack("<QQQBB6x", 0x20000, 0x1000, 0, 1, 1),
        0,
        {"iova": 0x20000, "type_name": "MISS", "perm_name": "RO"},
        "iotlb",
    ),
    ("backend", 1, True, Q(0), 0, {"result": 0}, "ack"),
    ("backend", 2, False, b"", 0, {}, "empty"),
    (
        "backend",
        3,
        False,
        struct.pack("<QQQ", 2, 4096, 0x3000),
        1,
        {"index": 2, "nofd": False, "size": 4096, "offset": 0x3000},
        "vring_area",
    ),
    ("backend", 4, False, struct.pack("<II", 1, 0), 0, {"index": 1}, "vring_state"),
    ("backend", 5, False, struct.pack("<II", 2, 0), 0, {"index": 2}, "vring_state"),
    ("backend", 6, False, UUID.bytes, 0, {"uuid": str(UUID)}, "shared"),
    ("backend", 7, False, UUID.bytes, 0, {"uuid": str(UUID)}, "shared"),
    ("backend", 8, False, UUID.bytes, 0, {"uuid": str(UUID)}, "shared"),
    ("backend", 8, True, Q(0), 1, {"result": 0}, "ack"),
    (
        "backend",
        9,
        False,
        struct.pack("<B7xQQQQ", 1, 0x1000, 0x2000, 0x4000, 1),
        1,
        {"shmid": 1, "fd_offset": 0x1000, "shm_offset": 0x2000, "len": 0x4000, "rw": True},
        "shmem_map",
    ),
    (
        "backend",
        10,
        False,
        struct.pack("<B7xQQQQ", 1, 0, 0x2000, 0x4000, 0),
        0,
        {"shmid": 1, "len": 0x4000, "rw": False},
        "shmem_map",
    ),
]


@pytest.mark.parametrize(
    "channel,req,reply,payload,fds,expect,layout",
    CASES,
    ids=[f"{c[0]}-{c[1]}-{'reply' if c[2] else 'req'}-{c[6]}" for c in CASES],
)
def test_decode(channel, req, reply, payload, fds, expect, layout):
    msg = decode(channel, req, payload, reply=reply, fds=fds)
    assert msg.name == requests.lookup(channel, req).name
    assert msg.reply is reply
    assert msg.layout == layout
    assert msg.size == len(payload)
    for key, value in expect.items():
        assert msg.payload[key] == value, key
    malformed = [p for p in msg.problems if p.info.group == "malformed"]
    assert not malformed, msg.problems
    assert len(msg.fds) == fds


def test_every_id_and_reply_has_a_case():
    covered = {(c[0], c[1], c[2]) for c in CASES}
    for spec in (*requests.FRONTEND_REQUESTS, *requests.BACKEND_REQUESTS):
        assert (
            (spec.channel, spec.id, False) in covered
            or spec.request[0].name == "empty"
            and any(k[:2] == (spec.channel, spec.id) for k in covered)
        ), spec.name
        if spec.reply and spec.reply[0].name != "ack":
            assert (spec.channel, spec.id, True) in covered, f"{spec.name} reply"


def test_xen_regions_when_xen_mmap_negotiated():
    pre = [(1, b"", Q(1 << 30)), (15, b"", Q(1 << 17)), (16, Q(1 << 17), None)]
    msg = decode("main", 5, struct.pack("<II", 1, 0) + REGION_XEN, reply=False, fds=1, pre=pre)
    assert msg.layout == "mem_table_xen"
    assert msg.payload["regions"][0]["domid"] == 7
    assert msg.payload["regions"][0]["map_on_demand"] is True


def test_packed_ring_base_when_ring_packed_negotiated():
    pre = [(2, Q(1 << 34 | 1 << 32), None)]
    num = (1 << 31) | (5 << 16) | (1 << 15) | 9
    msg = decode("main", 10, struct.pack("<II", 0, num), reply=False, pre=pre)
    assert msg.payload["avail_idx"] == 9 and msg.payload["avail_wrap"] == 1
    assert msg.payload["used_idx"] == 5 and msg.payload["used_wrap"] == 1


def test_postcopy_second_set_mem_table_is_an_ack():
    msg = decode("main", 5, Q(0), reply=False)
    assert msg.layout == "postcopy_ack" and not msg.problems


def test_big_endian_host():
    p = Pipeline()
    from vuinspect.frames import event_frame

    p.feed(event_frame("open", 1, 1, {"byteorder": "big"}))
    data = struct.pack(">III", 8, 1, 8) + struct.pack(">II", 3, 512)
    (msg,) = p.feed(Frame(2, 1, "main", "f2b", data))
    assert msg.name == "SET_VRING_NUM" and msg.payload == {"index": 3, "num": 512}
