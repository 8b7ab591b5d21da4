"""Captures for the dissector tests, built from the protocol tables themselves.

``every_message_frames`` walks FRONTEND_REQUESTS and BACKEND_REQUESTS and
emits every request layout alternative and every reply layout alternative,
with random but well-formed values (counts, fd numbers, enum values and
padding consistent), after a negotiation that turns every feature on.  The
problem captures each trigger one problem code of the Python decoder.
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Iterator
from typing import Any

from vuinspect.encode import build, encode_layout, message
from vuinspect.frames import Frame, event_frame
from vuinspect.protocol.layouts import ACK, Array, Field, Layout, Tail
from vuinspect.protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS, RequestSpec

BASE_NS = 1_764_000_000_000_000_000
ALL_PROTOCOL = (1 << 24) - 1
# PROTOCOL_FEATURES, VERSION_1, ACCESS_PLATFORM, RING_PACKED + net bits CSUM, MAC, MRG_RXBUF, MQ
VIRTIO = (1 << 30) | (1 << 32) | (1 << 33) | (1 << 34) | 1 | (1 << 5) | (1 << 15) | (1 << 22)


class Clock:
    def __init__(self) -> None:
        self.ns = BASE_NS

    def __call__(self, step: int = 1500) -> int:
        self.ns += step
        return self.ns


def field_values(lay: Layout, rng: random.Random) -> dict[str, Any]:
    """Random values a decoder must read back exactly; counts and sizes left to the encoder."""
    counts = {f.count for f in lay.fields if isinstance(f, Array) and isinstance(f.count, str)}
    counts |= {f.length for f in lay.fields if isinstance(f, Tail) and f.length}
    out: dict[str, Any] = {}
    for f in lay.fields:
        if isinstance(f, Field):
            if f.name in counts or f.display == "padding":
                continue
            if f.display == "uuid":
                out[f.name] = str(uuid.UUID(int=rng.getrandbits(128)))
            elif f.display == "mac":
                out[f.name] = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
            elif f.is_bytes:
                out[f.name] = bytes(rng.randrange(256) for _ in range(f.size)).hex()
            elif f.display == "enum" and f.values:
                out[f.name] = rng.choice(sorted(f.values))
            elif f.bitfields:
                for name, mask in f.bitfields:
                    shift = (mask & -mask).bit_length() - 1
                    out[name] = rng.randrange((mask >> shift) + 1)
            else:
                bits = struct.calcsize("<" + f.fmt) * 8
                if f.fmt.islower():
                    out[f.name] = rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1))
                else:
                    out[f.name] = rng.getrandbits(bits)
        elif isinstance(f, Array):
            n = f.count if isinstance(f.count, int) else rng.randrange(1, 4)
            out[f.name] = [field_values(f.item, rng) for _ in range(n)]
        else:
            out[f.name] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))).hex()
    return out


def well_formed(lay: Layout, values: dict[str, Any]) -> dict[str, Any]:
    """Adjust values that the decoder checks for consistency (results, error codes)."""
    v = dict(values)
    if lay.name == "ack":
        v["result"] = 0
    if lay.name == "device_state_result":
        v["error"] = 0
    if lay.name.startswith("crypto"):
        v["session_id"] = abs(v.get("session_id", 0))
        if lay.name == "crypto_session_sym" and v.get("op_code") == 0x404:
            v["op_code"] = 0x002
    if lay.name == "crypto_session_asym":
        v["op_code"] = 0x404
    return v


def fd_count(spec: RequestSpec, lay: Layout, values: dict[str, Any], reply: bool) -> int:
    """The number of fds rule_ops.check_fds accepts for this message."""
    lo, hi = spec.reply_fds if reply else spec.fds
    if lay.name in ("vring_fd", "vring_area"):
        return 0 if values.get("nofd") else 1
    if lay.name == "postcopy_ack":
        return 0
    if hi == -1:
        return len(values.get("regions", ())) if "regions" in values else 8
    return lo


def fds_for(n: int, tag: str) -> tuple[str, ...]:
    return tuple(f"memfd:{tag}-{i} size=1MiB" for i in range(n))


def _exchange(
    spec: RequestSpec,
    req_lay: Layout,
    rep_lay: Layout | None,
    rng: random.Random,
    clock: Clock,
    conn: int,
    order: str,
) -> Iterator[Frame]:
    ask, answer = ("f2b", "b2f") if spec.channel == "main" else ("b2f", "f2b")
    values = well_formed(req_lay, field_values(req_lay, rng))
    need = spec.reply_mode in ("ack", "flag", "log_shmfd")
    data = build(spec.channel, spec.id, values, need_reply=need, layout=req_lay.name, order=order)
    n = fd_count(spec, req_lay, values, False)
    yield Frame(clock(), conn, spec.channel, ask, data, fds_for(n, spec.name.lower()))
    if rep_lay is None:
        return
    rvalues = well_formed(rep_lay, field_values(rep_lay, rng))
    data = build(spec.channel, spec.id, rvalues, reply=True, layout=rep_lay.name, order=order)
    n = fd_count(spec, rep_lay, rvalues, True)
    yield Frame(
        clock(rng.randrange(500, 50_000)), conn, spec.channel, answer, data, fds_for(n, "reply")
    )


def every_message_frames(seed: int = 4, conn: int = 1, order: str = "<") -> list[Frame]:
    """Negotiation, then every request and reply alternative of both channels."""
    rng = random.Random(seed)
    clock = Clock()
    info = {
        "label": f"/run/vhost-net{conn}.sock",
        "listen": "/tmp/l.sock",
        "connect": "/tmp/c.sock",
        "orientation": "frontend-connects",
        "device": "net",
        "byteorder": "big" if order == ">" else "little",
    }
    frames = [event_frame("open", clock(), conn, info)]

    def main(data: bytes, direction: str = "f2b", fds: tuple[str, ...] = ()) -> None:
        frames.append(Frame(clock(), conn, "main", direction, data, fds))

    main(build("main", 1, order=order))
    main(build("main", 1, {"features": VIRTIO}, reply=True, order=order), "b2f")
    main(build("main", 2, {"features": VIRTIO}, order=order))
    main(build("main", 15, order=order))
    main(build("main", 15, {"features": ALL_PROTOCOL}, reply=True, order=order), "b2f")
    main(build("main", 16, {"features": ALL_PROTOCOL}, order=order))
    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS):
        for i, req_lay in enumerate(spec.request):
            frames += _exchange(
                spec, req_lay, spec.reply[0] if spec.reply else None, rng, clock, conn, order
            )
            if i == 0:
                for rep_lay in spec.reply[1:]:
                    frames += _exchange(spec, req_lay, rep_lay, rng, clock, conn, order)
    frames.append(
        event_frame("close", clock(), conn, {"reason": "front-end closed", "by": "frontend"})
    )
    return frames


def framing_frames(conn: int = 3) -> list[Frame]:
    """Several messages in one frame, one message split over frames, fds on a split, garbage."""
    clock = Clock()
    out = [event_frame("open", clock(), conn, {"label": "framing.sock"})]  # device guessed: blk
    two = build("main", 1) + build("main", 3, need_reply=True)
    out.append(Frame(clock(), conn, "main", "f2b", two))
    out.append(
        Frame(
            clock(),
            conn,
            "main",
            "b2f",
            build("main", 1, {"features": 1 << 30 | 1 << 13}, reply=True),
        )
    )
    out.append(
        Frame(clock(), conn, "main", "f2b", build("main", 2, {"features": 1 << 13 | 1 << 1}))
    )
    mem = build(
        "main",
        5,
        {
            "regions": [
                {
                    "guest_phys_addr": 0,
                    "memory_size": 1 << 30,
                    "userspace_addr": 0x7F0000000000,
                    "mmap_offset": 0,
                }
            ]
        },
    )
    out.append(Frame(clock(), conn, "main", "f2b", mem[:7]))
    out.append(Frame(clock(), conn, "main", "f2b", mem[7:30], ("memfd:guest-ram size=1GiB",)))
    out.append(
        Frame(clock(), conn, "main", "f2b", mem[30:] + build("main", 8, {"index": 0, "num": 256}))
    )
    junk = (
        struct.pack("<III", 9, 1, 70000) + b"\xee" * 20 + build("main", 11, {"index": 0, "num": 0})
    )
    out.append(Frame(clock(), conn, "main", "f2b", junk))
    out.append(
        Frame(clock(), conn, "main", "b2f", build("main", 11, {"index": 0, "num": 5}, reply=True))
    )
    out.append(event_frame("note", clock(), conn, {"text": "resync \u00e9 test"}))
    out.append(event_frame("close", clock(), conn, {"reason": "back-end closed", "by": "backend"}))
    return out


def raw(request: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return message(request, payload, flags=flags)


def problem_frames() -> dict[str, list[Frame]]:
    """code -> a short session that triggers it (each code's first trigger is in frame 3+)."""
    clock = Clock()
    c = 7

    def f(direction: str, data: bytes, fds: tuple[str, ...] = (), channel: str = "main") -> Frame:
        return Frame(clock(), c, channel, direction, data, fds)

    def opened(*frames: Frame) -> list[Frame]:
        return [event_frame("open", clock(), c, {"label": "p.sock"}), *frames]

    acked = [
        f("f2b", build("main", 1)),
        f("b2f", build("main", 1, {"features": 1 << 30}, reply=True)),
        f("f2b", build("main", 15)),
        f("b2f", build("main", 15, {"features": 0x1}, reply=True)),
        f("f2b", build("main", 16, {"features": 0x1})),
    ]  # only MQ: no REPLY_ACK, no CONFIG
    u64 = encode_layout
    return {
        "bad_version": opened(f("f2b", raw(1, flags=2))),
        "reserved_flags": opened(f("f2b", raw(1, flags=0x101))),
        "wrong_size": opened(f("f2b", raw(8, b"\0" * 5))),
        "bad_count": opened(
            f("f2b", raw(5, struct.pack("<II", 9, 0) + b"\0" * 32), fds_for(8, "m"))
        ),
        "nonzero_padding": opened(f("f2b", raw(19, b"\x01" * 6 + b"\x05\x00"))),
        "wrong_direction": opened(f("f2b", raw(1, flags=0x5))),
        "fd_count": opened(f("f2b", build("main", 12, {"index": 1, "nofd": 0}))),
        "unknown_request": opened(f("f2b", raw(99))),
        "reply_flags": opened(
            f("f2b", build("main", 1)), f("b2f", raw(1, u64(ACK, {"result": 3}), flags=0xD))
        ),
        "reply_to_nothing": opened(f("b2f", build("main", 3, reply=True))),
        "reply_mismatch": opened(
            f("f2b", build("main", 1)), f("b2f", build("main", 15, {"features": 1}, reply=True))
        ),
        "missing_reply": opened(f("f2b", build("main", 1))),
        "unexpected_reply": opened(
            *acked, f("f2b", raw(99, flags=0x9)), f("b2f", raw(99, flags=0x5))
        ),
        "request_while_waiting": opened(f("f2b", build("main", 1)), f("f2b", build("main", 15))),
        "feature_not_negotiated": opened(
            *acked, f("f2b", build("main", 24, {"offset": 0, "data": "00"}))
        ),
        "features_not_offered": opened(
            f("f2b", build("main", 1)),
            f("b2f", build("main", 1, {"features": 1}, reply=True)),
            f("f2b", build("main", 2, {"features": 3})),
        ),
        "need_reply_without_ack": opened(*acked, f("f2b", build("main", 3, need_reply=True))),
        "enable_without_protocol_features": opened(
            f("f2b", build("main", 1)),
            f("b2f", build("main", 1, {"features": 1}, reply=True)),
            f("f2b", build("main", 18, {"index": 0, "num": 1})),
        ),
        "vring_not_started": opened(
            f("f2b", build("main", 1)),
            f("b2f", build("main", 1, {"features": 1 << 30}, reply=True)),
            f("f2b", build("main", 11, {"index": 2})),
        ),
        "too_many_regions": opened(
            f("f2b", build("main", 36)),
            f("b2f", build("main", 36, {"slots": 0}, reply=True)),
            f(
                "f2b",
                build("main", 37, {"guest_phys_addr": 0, "memory_size": 4096}),
                fds_for(1, "r"),
            ),
        ),
        "fds_without_backend_send_fd": opened(
            *acked,
            f(
                "b2f",
                build("backend", 3, {"index": 0, "nofd": 0, "size": 4096}),
                fds_for(1, "n"),
                "backend",
            ),
        ),
        "fds_truncated": opened(
            f(
                "f2b",
                build("main", 12, {"index": 0, "nofd": 0}),
                ("truncated: the kernel dropped fds (MSG_CTRUNC)",),
            )
        ),
        "vring_out_of_range": opened(
            f("f2b", build("main", 17)),
            f("b2f", build("main", 17, {"num_queues": 1}, reply=True)),
            f("f2b", build("main", 8, {"index": 2, "num": 256})),
        ),
        "ack_error": opened(
            f("f2b", build("main", 3, need_reply=True)),
            f("b2f", build("main", 3, {"result": 1}, reply=True)),
        ),
        "oversize": opened(f("f2b", struct.pack("<III", 1, 1, 1 << 20) + b"\0" * 8)),
        "framing_lost": opened(f("f2b", struct.pack("<III", 1, 1, 1 << 20) + build("main", 1))),
        "truncated_payload": opened(
            f("f2b", build("main", 2, {"features": 1})[:15]),
            event_frame("close", clock(), c, {"reason": "gone"}),
        ),
        "truncated_header": opened(
            f("f2b", b"\x01\x00\x00"), event_frame("close", clock(), c, {"reason": "gone"})
        ),
    }


def vring_cap_frames(conn: int = 9, order: str = "<") -> list[Frame]:
    """Vring indices past dataplane MAX_RINGS: reported, and no state kept for them.

    A VRING_KICK (u32 index) past the cap, then GET_VRING_BASE of it: the ring was never
    started for either side (nothing was kept).  Then indices past the announced queue
    count, below and past the cap.
    """
    from vuinspect.dataplane.track import MAX_RINGS

    clock = Clock()
    byteorder = "big" if order == ">" else "little"
    frames = [event_frame("open", clock(), conn, {"label": "cap.sock", "byteorder": byteorder})]

    def f(direction: str, request: int, values: dict[str, Any] | None = None, **kw: Any) -> None:
        data = build("main", request, values, order=order, **kw)
        frames.append(Frame(clock(), conn, "main", direction, data))

    f("f2b", 1)
    f("b2f", 1, {"features": 1 << 30}, reply=True)
    for index in (MAX_RINGS - 1, MAX_RINGS, 0xFFFFFFFF):
        f("f2b", 35, {"index": index, "num": 0})  # VRING_KICK
        f("f2b", 11, {"index": index, "num": 0})  # GET_VRING_BASE
        f("b2f", 11, {"index": index, "num": 3}, reply=True)
    f("f2b", 17)
    f("b2f", 17, {"num_queues": 1}, reply=True)
    for index in (1, 2, MAX_RINGS + 5):
        f("f2b", 8, {"index": index, "num": 256})  # SET_VRING_NUM
    frames.append(event_frame("close", clock(), conn, {"reason": "gone"}))
    return frames


def region_flood_frames(conn: int = 12, extra: int = 5) -> list[Frame]:
    """dataplane MAX_REGIONS + ``extra`` ADD_MEM_REG with no slot count announced: past the
    cap each is too_many_regions and not kept, so removals find the count where it was."""
    from vuinspect.dataplane.memory import MAX_REGIONS

    clock = Clock()
    frames = [event_frame("open", clock(), conn, {"label": "flood.sock"})]
    for i in range(MAX_REGIONS + extra):
        region = {"guest_phys_addr": i << 20, "memory_size": 4096, "userspace_addr": i << 20}
        data = build("main", 37, region)
        frames.append(Frame(clock(), conn, "main", "f2b", data, ("memfd:guest-ram",)))
    return frames


def region_frames(conn: int = 11, adds: int = 0) -> list[Frame]:
    """ADD_MEM_REG and REM_MEM_REG against 2 memory slots: a removal takes every region of
    its key (here both copies of A), so the fourth add fits and the fifth does not.

    ``adds`` more regions, then as many removals of a key never added: the count stays
    exact and each removal is one lookup whatever was added before.
    """
    clock = Clock()
    frames = [event_frame("open", clock(), conn, {"label": "regions.sock"})]

    def f(direction: str, request: int, values: dict[str, Any] | None = None, **kw: Any) -> None:
        frames.append(Frame(clock(), conn, "main", direction, build("main", request, values, **kw)))

    def mem(request: int, addr: int) -> None:
        region = {"guest_phys_addr": addr, "memory_size": 4096, "userspace_addr": addr}
        data = build("main", request, region)
        frames.append(Frame(clock(), conn, "main", "f2b", data, ("memfd:guest-ram",)))

    f("f2b", 36)
    f("b2f", 36, {"slots": 2}, reply=True)
    for request, addr in ((37, 0), (37, 0), (37, 1 << 20), (38, 0), (37, 2 << 20), (37, 3 << 20)):
        mem(request, addr)
    for i in range(adds):
        mem(37, (i + 8) << 20)
    for _ in range(adds):
        mem(38, 1 << 40)
    frames.append(event_frame("close", clock(), conn, {"reason": "gone"}))
    return frames


def dataplane_frames(conn: int = 7) -> list[Frame]:
    """A blk connection with ring and notify frames of every shape the proxy writes.

    Split samples that stall (the pipeline raises backend_stalled) and then progress
    (payload.resolved), a packed sample with every packed key, a sample with an
    in-flight chain (blk header, a chain problem), notify windows of kick, call and err.
    """
    from vuinspect.dataplane import Chain, Desc, RingSample
    from vuinspect.dataplane.headers import decode_header
    from vuinspect.dataplane.inflight_region import InflightQueue
    from vuinspect.dataplane.problems import dp_problem
    from vuinspect.frames import notify_frame, ring_frame

    s = 1_000_000_000
    t0 = BASE_NS + 123_456_789  # 19 digits, odd: a double would not keep them

    def ring(t: float, avail: int, used: int, event: str = "tick", **extra: Any) -> Frame:
        sample = RingSample(
            0,
            t0 + int(t * s),
            "split",
            256,
            avail_idx=avail,
            used_idx=used,
            used_event=used,
            avail_event=avail,
        )
        return ring_frame(sample.ts_ns, conn, {**sample.to_json(), "event": event, **extra})

    header = decode_header("blk", struct.pack("<IIQ", 1, 0, 8))
    chain = Chain(
        3,
        [Desc(3, 0x1000, 16, 1, 4), Desc(4, 0x2000, 1, 2, 0, True)],
        [dp_problem("desc_loop", "vring 0: descriptor 4 seen twice")],
        header,
    )
    packed = RingSample(
        1,
        t0 + 3 * s,
        "packed",
        128,
        avail_idx=130,
        used_idx=129,
        avail_pos=2,
        avail_wrap=0,
        used_pos=1,
        used_wrap=0,
        driver_event_off=5,
        driver_event_wrap=1,
        driver_event_flags=2,
        device_event_off=0,
        device_event_wrap=1,
        device_event_flags=1,
        problems=(dp_problem("ring_index_ahead", "vring 1: avail 130 ahead"),),
        call_fd="fd",
    )
    # the INFLIGHT_SHMFD region's queue as the sampler writes it (dataplane/inflight_region.py)
    split_inflight = InflightQueue(
        0, "split", 1, 256, 0, {"last_batch_head": 3}, 1, ({"index": 3, "counter": 9, "next": 4},)
    ).to_json()
    packed_inflight = InflightQueue(
        1,
        "packed",
        1,
        128,
        129,
        {
            "free_head": 2,
            "old_free_head": 1,
            "old_used_idx": 128,
            "used_wrap_counter": 0,
            "old_used_wrap_counter": 1,
        },
        1,
        (
            {
                "index": 1,
                "counter": 4,
                "next": 2,
                "last": 1,
                "num": 1,
                "id": 1,
                "flags": 0x80,
                "len": 512,
                "addr": 0x3000,
            },
        ),
        (dp_problem("inflight_bad_region", "queue 1: a sample problem"),),
    ).to_json()
    return [
        event_frame("open", t0 - 1000, conn, {"label": "dp", "device": "blk"}),
        ring(0.0, 0, 0, event="start"),
        notify_frame(t0 + 5_000_000, conn, 0, "kick", 7, t0 + 1_000_001, t0 + 9_000_003),
        ring(0.1, 4, 0, chains=[chain.to_json()], inflight=split_inflight),
        ring(0.6, 4, 0),
        ring(1.1, 4, 0),
        ring(1.6, 4, 0),
        ring(2.2, 4, 0),
        notify_frame(t0 + int(2.3 * s), conn, 0, "call", 1, t0 + int(2.3 * s), t0 + int(2.3 * s)),
        ring(2.5, 4, 4),
        ring_frame(
            packed.ts_ns,
            conn,
            {**packed.to_json(), "event": "control", "inflight": packed_inflight},
        ),
        notify_frame(t0 + 4 * s, conn, 1, "err", 2, t0 + 4 * s - 7, t0 + 4 * s - 1),
        ring(5.0, 4, 4, event="stop"),
    ]


def pending_flood_frames(conn: int = 9, extra: int = 5) -> list[Frame]:
    """state.MAX_PENDING + ``extra`` GET_FEATURES a silent back-end never answers, then one
    reply: the oldest ``extra`` are given up (missing_reply) and the reply pairs with the
    oldest still kept, on both sides."""
    from vuinspect.state import MAX_PENDING

    clock = Clock()
    frames = [event_frame("open", clock(), conn, {"label": "flood.sock"})]
    for _ in range(MAX_PENDING + extra):
        frames.append(Frame(clock(), conn, "main", "f2b", build("main", 1)))
    reply = build("main", 1, {"features": 1}, reply=True)
    frames.append(Frame(clock(), conn, "main", "b2f", reply))
    return frames
