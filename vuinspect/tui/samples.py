"""Deterministic sample conversations as frames: for tests, screenshots and the benchmark.

The frames are what the proxy records for a QEMU + vhost-user-blk back-end
handshake (built with :func:`vuinspect.encode.build`, so they decode exactly like
real traffic), with fixed timestamps so that snapshots do not depend on the clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from vuinspect.capture import CaptureWriter
from vuinspect.encode import build
from vuinspect.frames import Channel, Direction, Frame, event_frame
from vuinspect.protocol import features as F
from vuinspect.protocol.requests import BackendRequest as BE
from vuinspect.protocol.requests import FrontendRequest as FE

T0_NS = 1_764_000_000_000_000_000  # fixed epoch for reproducible screens

BLK_VIRTIO = F.virtio_mask(
    *("SIZE_MAX", "SEG_MAX", "BLK_SIZE", "FLUSH", "MQ", "DISCARD", "WRITE_ZEROES"),
    *("RING_INDIRECT_DESC", "RING_EVENT_IDX", "PROTOCOL_FEATURES", "VERSION_1", "ACCESS_PLATFORM"),
    device="blk",
)
BLK_PROTOCOL = F.protocol_mask(
    "MQ",
    "REPLY_ACK",
    "BACKEND_REQ",
    "CONFIG",
    "INFLIGHT_SHMFD",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "BACKEND_SEND_FD",
)
GIB = 1 << 30


class Script:
    """Writes one conversation as frames with a clock that advances by ``step_ns``."""

    def __init__(self, t0_ns: int = T0_NS, step_ns: int = 20_000) -> None:
        self.ts = t0_ns
        self.step = step_ns
        self.frames: list[Frame] = []

    def _tick(self, dt_ns: int | None) -> int:
        self.ts += self.step if dt_ns is None else dt_ns
        return self.ts

    def open(self, conn: int, label: str, device: str | None = "blk", **extra: Any) -> None:
        info = {
            "label": label,
            "listen": label,
            "connect": label + ".orig",
            "orientation": "frontend-connects",
            **extra,
        }
        if device:
            info["device"] = device
        self.frames.append(event_frame("open", self._tick(0), conn, info))

    def close(self, conn: int, reason: str, by: str = "frontend") -> None:
        self.frames.append(
            event_frame("close", self._tick(None), conn, {"reason": reason, "by": by})
        )

    def note(self, conn: int, text: str) -> None:
        self.frames.append(event_frame("note", self._tick(None), conn, {"text": text}))

    def request(
        self,
        conn: int,
        request: int,
        values: dict[str, Any] | None = None,
        *,
        channel: Channel = "main",
        need_reply: bool = False,
        fds: tuple[str, ...] = (),
        dt_ns: int | None = None,
    ) -> None:
        data = build(channel, request, values, need_reply=need_reply)
        direction: Direction = "f2b" if channel == "main" else "b2f"
        self.frames.append(Frame(self._tick(dt_ns), conn, channel, direction, data, fds))

    def reply(
        self,
        conn: int,
        request: int,
        values: dict[str, Any] | None = None,
        *,
        channel: Channel = "main",
        fds: tuple[str, ...] = (),
        layout: str | None = None,
        dt_ns: int | None = None,
    ) -> None:
        data = build(channel, request, values, reply=True, layout=layout)
        direction: Direction = "b2f" if channel == "main" else "f2b"
        self.frames.append(Frame(self._tick(dt_ns), conn, channel, direction, data, fds))

    def ack(
        self,
        conn: int,
        request: int,
        channel: Channel = "main",
        result: int = 0,
        dt_ns: int | None = None,
    ) -> None:
        self.reply(conn, request, {"result": result}, channel=channel, layout="ack", dt_ns=dt_ns)


def blk_handshake(
    s: Script, conn: int, label: str = "/run/vhost/blk0.sock", queues: int = 2
) -> None:
    """What QEMU 7.2 says to qemu-storage-daemon's vhost-user-blk export, in order."""
    s.open(conn, label, "blk")
    s.request(conn, FE.GET_FEATURES)
    s.reply(conn, FE.GET_FEATURES, {"features": BLK_VIRTIO}, dt_ns=35_000)
    s.request(conn, FE.GET_PROTOCOL_FEATURES)
    s.reply(conn, FE.GET_PROTOCOL_FEATURES, {"features": BLK_PROTOCOL}, dt_ns=18_000)
    s.request(conn, FE.SET_PROTOCOL_FEATURES, {"features": BLK_PROTOCOL})
    s.request(conn, FE.GET_QUEUE_NUM)
    s.reply(conn, FE.GET_QUEUE_NUM, {"num_queues": queues}, dt_ns=12_000)
    s.request(conn, FE.GET_MAX_MEM_SLOTS)
    s.reply(conn, FE.GET_MAX_MEM_SLOTS, {"slots": 509}, dt_ns=9_000)
    s.request(conn, FE.SET_BACKEND_REQ_FD, need_reply=True, fds=("socket:[91234]",))
    s.ack(conn, FE.SET_BACKEND_REQ_FD, dt_ns=41_000)
    s.request(conn, FE.SET_OWNER, need_reply=True)
    s.ack(conn, FE.SET_OWNER)
    s.request(conn, FE.GET_CONFIG, {"offset": 0, "size": 16, "flags": 0, "data": "00" * 16})
    s.reply(
        conn,
        FE.GET_CONFIG,
        {"offset": 0, "size": 16, "flags": 0, "data": "0000200000000000" + "00000000fe010000"},
        dt_ns=28_000,
    )
    s.request(conn, FE.SET_FEATURES, {"features": BLK_VIRTIO}, need_reply=True)
    s.ack(conn, FE.SET_FEATURES)
    regions = [
        {
            "guest_phys_addr": 0,
            "memory_size": 0xA0000,
            "userspace_addr": 0x7F0000000000,
            "mmap_offset": 0,
        },
        {
            "guest_phys_addr": 0xC0000,
            "memory_size": GIB - 0xC0000,
            "userspace_addr": 0x7F00000C0000,
            "mmap_offset": 0xC0000,
        },
    ]
    s.request(
        conn,
        FE.SET_MEM_TABLE,
        {"regions": regions},
        need_reply=True,
        fds=("memfd:pc.ram size=1GiB", "memfd:pc.ram size=1GiB"),
    )
    s.ack(conn, FE.SET_MEM_TABLE, dt_ns=310_000)
    for q in range(queues):
        s.request(conn, FE.SET_VRING_NUM, {"index": q, "num": 256}, need_reply=True)
        s.ack(conn, FE.SET_VRING_NUM)
        s.request(conn, FE.SET_VRING_BASE, {"index": q, "num": 0}, need_reply=True)
        s.ack(conn, FE.SET_VRING_BASE)
        s.request(
            conn,
            FE.SET_VRING_ADDR,
            {
                "index": q,
                "flags": 0,
                "desc": 0x3E5A0000 + q * 0x4000,
                "used": 0x3E5A2000 + q * 0x4000,
                "avail": 0x3E5A1000 + q * 0x4000,
                "log": 0,
            },
            need_reply=True,
        )
        s.ack(conn, FE.SET_VRING_ADDR)
        s.request(
            conn, FE.SET_VRING_KICK, {"index": q}, need_reply=True, fds=(f"eventfd:[{700 + q}]",)
        )
        s.ack(conn, FE.SET_VRING_KICK)
        s.request(
            conn, FE.SET_VRING_CALL, {"index": q}, need_reply=True, fds=(f"eventfd:[{800 + q}]",)
        )
        s.ack(conn, FE.SET_VRING_CALL)
        s.request(conn, FE.SET_VRING_ENABLE, {"index": q, "num": 1}, need_reply=True)
        s.ack(conn, FE.SET_VRING_ENABLE)
    s.request(conn, FE.SET_STATUS, {"status": 0xF}, need_reply=True)
    s.ack(conn, FE.SET_STATUS)
    s.request(conn, BE.BACKEND_CONFIG_CHANGE_MSG, {}, channel="backend", need_reply=True)
    s.ack(conn, BE.BACKEND_CONFIG_CHANGE_MSG, channel="backend", dt_ns=22_000)


def demo_frames() -> list[Frame]:
    """Two blk sessions: one stops its rings and ends, the other stalls on GET_VRING_BASE.

    Session 1 also asks for the base of a ring it never set up (a conformance
    problem); the capture ends with a note five seconds after the stall, so the
    stalled request has an age.
    """
    s = Script()
    blk_handshake(s, 1, "/run/vhost/blk0.sock")
    s.request(1, 11, {"index": 0, "num": 0})
    s.reply(1, 11, {"index": 0, "num": 37}, dt_ns=64_000)
    s.request(1, 11, {"index": 3, "num": 0})  # vring 3 was never started: a problem
    s.reply(1, 11, {"index": 3, "num": 0}, dt_ns=1_250_000)
    s.close(1, "front-end closed the socket")
    blk_handshake(s, 2, "/run/vhost/blk1.sock", queues=1)
    s.request(2, 11, {"index": 0, "num": 0})  # the back-end never answers: a stall
    s.ts += 5_000_000_000 - s.step
    s.note(2, "capture stopped by the user")
    return s.frames


def write_capture(path: str | os.PathLike[str], frames: list[Frame]) -> str:
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    return os.fspath(path)


def bulk_frames(messages: int, conns: int = 4) -> Iterator[Frame]:
    """About ``messages`` messages: blk handshakes, then IOTLB and config traffic per conn.

    The steady-state traffic is what an IOMMU-enabled guest produces (IOTLB
    misses on the back-end channel answered with updates) plus GET_CONFIG polls.
    """
    s = Script(step_ns=3_000)
    for c in range(1, conns + 1):
        blk_handshake(s, c, f"/run/vhost/blk{c}.sock")
    yield from s.frames
    left = messages - len(s.frames)
    i = 0
    while left > 0:
        s.frames = []
        conn = 1 + i % conns
        iova = 0x1000 * (i % 4096)
        if i % 4 == 3:
            s.request(conn, FE.GET_CONFIG, {"offset": 0, "size": 8, "flags": 0, "data": "00" * 8})
            s.reply(
                conn,
                FE.GET_CONFIG,
                {"offset": 0, "size": 8, "flags": 0, "data": f"{i:016x}"},
                dt_ns=9_000 + i % 1000,
            )
        else:
            s.request(
                conn,
                BE.BACKEND_IOTLB_MSG,
                {"iova": iova, "size": 0x1000, "uaddr": 0, "perm": 3, "type": 1},
                channel="backend",
                need_reply=True,
            )
            s.request(
                conn,
                FE.IOTLB_MSG,
                {
                    "iova": iova,
                    "size": 0x1000,
                    "uaddr": 0x7F0000000000 + iova,
                    "perm": 3,
                    "type": 2,
                },
            )
            s.ack(conn, FE.IOTLB_MSG, dt_ns=4_000 + i % 700)
            s.ack(conn, BE.BACKEND_IOTLB_MSG, channel="backend", dt_ns=2_000)
        yield from s.frames
        left -= len(s.frames)
        i += 1


S_NS = 1_000_000_000


def _chain(head: int, sector: int, write: bool) -> dict[str, Any]:
    """An in-flight blk request as the sampler stores it (``Chain.to_json()``)."""
    base = 0x3F000000 + head * 0x3000
    descs = [
        {
            "index": head,
            "addr": base,
            "len": 16,
            "flags": 1,
            "flag_names": ["NEXT"],
            "next": head + 1,
            "indirect_table": None,
        },
        {
            "index": head + 1,
            "addr": base + 0x1000,
            "len": 4096,
            "flags": 1 if write else 3,
            "flag_names": ["NEXT"] if write else ["NEXT", "WRITE"],
            "next": head + 2,
            "indirect_table": None,
        },
        {
            "index": head + 2,
            "addr": base + 0x2000,
            "len": 1,
            "flags": 2,
            "flag_names": ["WRITE"],
            "next": 0,
            "indirect_table": None,
        },
    ]
    header = {
        "layout": "virtio_blk_outhdr",
        "type": 1 if write else 0,
        "type_name": "OUT" if write else "IN",
        "ioprio": 0,
        "sector": sector,
    }
    return {
        "head": head,
        "descs": descs,
        "problems": [],
        "header": header,
        "truncated": False,
        "readable": 16 + (4096 if write else 0),
        "writable": 1 + (0 if write else 4096),
    }


def queue_frames() -> list[Frame]:
    """Rings of two blk sessions (the Queues view's sample): samples and kicks/calls.

    Connection 1: vring 0 stalls for about two seconds with four requests in
    flight, then completes them (resolved, with its duration); vring 1 runs
    the whole time.  Connection 2: vring 0 stalls and is still stalled when
    the capture ends (its sample holds the in-flight chains).
    """
    from vuinspect.frames import notify_frame, ring_frame

    s = Script()
    blk_handshake(s, 1, "/run/vhost/blk0.sock")
    blk_handshake(s, 2, "/run/vhost/blk1.sock", queues=1)
    t0 = s.ts + 1_000_000

    def ring(
        t: float,
        conn: int,
        vring: int,
        avail: int,
        used: int,
        chains: list[dict[str, Any]] | None = None,
    ) -> None:
        ts = t0 + int(t * S_NS)
        sample: dict[str, Any] = {
            "vring": vring,
            "ts_ns": ts,
            "layout": "split",
            "num": 256,
            "ok": True,
            "avail_idx": avail,
            "used_idx": used,
            "avail_flags": 0,
            "used_flags": 0,
            "problems": [],
            "in_flight": (avail - used) & 0xFFFF,
        }
        if chains:
            sample["chains"] = chains
        s.frames.append(ring_frame(ts, conn, sample))

    def notify(t: float, conn: int, vring: int, signal: str, count: int) -> None:
        ts = t0 + int(t * S_NS)
        s.frames.append(notify_frame(ts, conn, vring, signal, count, ts - 9_000_000, ts))

    stalled = [_chain(4 * i, 2048 + 8 * i, write=i % 2 == 1) for i in range(4)]
    for step in range(41):  # 0.0 .. 4.0 s, every 100 ms
        t = step / 10
        # c1 vring 1: steady I/O, 8 requests done per 100 ms
        ring(t, 1, 1, 8 * step + 2, 8 * step)
        notify(t + 0.001, 1, 1, "kick", 8)
        notify(t + 0.002, 1, 1, "call", 8)
        # c1 vring 0: runs, stalls from 0.5 s to 2.7 s with 4 in flight, then runs again
        if step <= 5:
            ring(t, 1, 0, 4 * step + (4 if step == 5 else 0), 4 * step)
        elif step < 27:
            if step % 5 == 0:  # keepalive samples while requests wait
                ring(t, 1, 0, 24, 20, stalled)
        else:
            ring(t, 1, 0, 24 + 4 * (step - 27), 24 + 4 * (step - 27))
        if step <= 5 or step >= 27:
            notify(t + 0.003, 1, 0, "kick", 4)
            notify(t + 0.004, 1, 0, "call", 4)
        # c2 vring 0: runs until 1.0 s, then stalls with 3 in flight to the end
        if step <= 10:
            ring(
                t,
                2,
                0,
                6 * step + (3 if step == 10 else 0),
                6 * step,
                stalled[:3] if step == 10 else None,
            )
        elif step % 5 == 0:
            ring(t, 2, 0, 63, 60, stalled[:3])
    s.frames.sort(key=lambda f: f.ts_ns)
    return s.frames
