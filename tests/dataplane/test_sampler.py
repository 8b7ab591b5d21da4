"""The proxy's ring sampler over a memfd guest: frames when things change, unmapped at close."""

from __future__ import annotations

import time

from vuinspect.dataplane.sampler import Sampler
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline

from .guestimage import GPA, GuestImage, SplitRing, fd_count, maps_mentioning

BLK_OUT = 1
VERSION_1 = 1 << 32


def setup(s: Sampler, img: GuestImage, ring: SplitRing, t: int) -> None:
    s.event(event_frame("open", t, 1, {"label": "t", "device": "blk"}))
    s.control(t, 1, "f2b", build("main", 2, {"features": VERSION_1}))
    region = {
        "guest_phys_addr": img.gpa,
        "memory_size": img.size,
        "userspace_addr": img.uva,
        "mmap_offset": img.mmap_offset,
    }
    s.memory(1, t, build("main", 5, {"nregions": 1, "padding": 0, "regions": [region]}), [img.fd])
    s.control(t, 1, "f2b", build("main", 8, {"index": 0, "num": ring.num}))
    s.control(
        t,
        1,
        "f2b",
        build(
            "main",
            9,
            {
                "index": 0,
                "flags": 0,
                "desc": img.uva_of(ring.desc),
                "used": img.uva_of(ring.used),
                "avail": img.uva_of(ring.avail),
                "log": 0,
            },
        ),
    )
    s.control(t, 1, "f2b", build("main", 10, {"index": 0, "num": 0}))
    s.memory(1, t, build("main", 12, {"u64": 0}), [img.fd])  # (any fd: the kick)


def test_sampler_frames_stall_and_unmap() -> None:
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-guest")
    ring = SplitRing(img, 8)
    out: list[Frame] = []
    clock = [1_000_000_000_000]
    s = Sampler(out.append, 0.1, clock=lambda: clock[0])
    before = fd_count()
    try:
        setup(s, img, ring, clock[0])
        s._drain()
        assert maps_mentioning("vuinspect-sampler-guest")  # mapped read-only by the sampler
        starts = [f for f in out if f.kind == "ring"]
        assert len(starts) == 1 and b'"event":"start"' in starts[0].data
        # a blk OUT request made available: header at GPA+0x800
        img.pack(GPA + 0x800, "IIQ", BLK_OUT, 0, 42)
        ring.set_desc(0, GPA + 0x800, 16)
        ring.add_avail(0)
        for _ in range(30):  # 3 s of ticks, nothing used
            clock[0] += 100_000_000
            s._tick(clock[0])
        frames = [f for f in out if f.kind == "ring"]
        # one for the change, then a keepalive every 0.5 s while it waits
        assert 6 <= len(frames) <= 9, [f.data for f in frames]
        assert b'"type_name":"OUT"' in frames[1].data and b'"sector":42' in frames[1].data
        ring.push_used(0)
        clock[0] += 100_000_000
        s._tick(clock[0])
        clock[0] += 100_000_000
        s._tick(clock[0])  # no change: no frame
        msgs = [
            m
            for m in Pipeline(device="blk").run([event_frame("open", 0, 1, {"label": "t"}), *out])
            if m.kind == "ring"
        ]
        codes = [m.problem_codes for m in msgs]
        assert ["backend_stalled"] in codes
        assert (
            msgs[-1].payload["used_idx"] == 1
            and msgs[-1].payload["resolved"][0]["code"] == "backend_stalled"
        )
        s.control(clock[0], 1, "f2b", build("main", 11, {"index": 0, "num": 0}))
        s._drain()
        assert b'"event":"stop"' in out[-1].data
        n = len(out)
        s.event(event_frame("close", clock[0], 1, {"reason": "test"}))
        s._tick(clock[0])
        s._drain()
        assert len(out) == n  # nothing after the close
        assert not maps_mentioning("vuinspect-sampler-guest") and not s.conns
        assert fd_count() <= before  # (none left open; other tests' threads may close theirs)
    finally:
        s.stop()
        img.close()


def test_thread_and_stop_leave_nothing_mapped() -> None:
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-guest2")
    ring = SplitRing(img, 8)
    out: list[Frame] = []
    s = Sampler(out.append, 0.01)
    s.start()
    try:
        setup(s, img, ring, time.time_ns())
        deadline = time.monotonic() + 5
        while not any(f.kind == "ring" for f in out) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(f.kind == "ring" for f in out)
    finally:
        s.stop()
    assert not maps_mentioning("vuinspect-sampler-guest2")
    img.close()


def test_tables_resent_without_rings_are_never_mapped() -> None:
    """A front-end (or the bench) resending its memory table costs dups, not mmaps."""
    before = fd_count()
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-guest3")
    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: 1)
    with_img = fd_count()
    region = {
        "guest_phys_addr": img.gpa,
        "memory_size": img.size,
        "userspace_addr": img.uva,
        "mmap_offset": img.mmap_offset,
    }
    msg = build("main", 5, {"nregions": 1, "padding": 0, "regions": [region]})
    try:
        for _ in range(100):
            s.memory(1, 1, msg, [img.fd])
            s._drain()
        s._tick(2)
        assert not maps_mentioning("vuinspect-sampler-guest3")
        assert fd_count() == with_img + 1  # only the last table's dup is held
        assert len(s.conns[1].pending) == 1
    finally:
        s.stop()
        img.close()
    assert fd_count() <= before  # (none left open; other tests' threads may close theirs)


def test_a_memory_message_with_more_fds_than_regions_keeps_only_what_it_can_use() -> None:
    """A front-end's SET_MEM_TABLE with 200 fds (its table has at most 8 regions): the
    sampler's queue holds dups of 8 of them, not 200 (a flood before the next tick would
    otherwise take the process's fds)."""
    import os

    img = GuestImage(size=1 << 16, name="vuinspect-sampler-guest4")
    s = Sampler([].append, 0.1, clock=lambda: 1)
    region = {
        "guest_phys_addr": img.gpa,
        "memory_size": img.size,
        "userspace_addr": img.uva,
        "mmap_offset": img.mmap_offset,
    }
    msg = build("main", 5, {"nregions": 1, "padding": 0, "regions": [region]})
    extra = [os.dup(img.fd) for _ in range(199)]
    try:
        before = fd_count()
        s.memory(1, 1, msg, [img.fd, *extra])
        assert fd_count() == before + 8
    finally:
        s.stop()
        for fd in extra:
            os.close(fd)
        img.close()


def test_a_full_queue_loses_the_connection_not_the_traffic() -> None:
    from vuinspect.dataplane import sampler as sm

    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: 1)
    msg = build("main", 8, {"index": 0, "num": 256})
    for _ in range(sm.MAX_QUEUE + 10):
        s.control(1, 1, "f2b", msg)
    assert len(s._q) == sm.MAX_QUEUE and s.dropped == 10
    s._drain()
    assert s.conns[1].lost and [f.kind for f in out] == ["note"]
    assert b"no longer sampled" in out[0].data
    assert not sm.wanted("f2b", build("main", 8, {"index": 0, "num": 1}) + bytes(5000))
    s.stop()


def test_a_reset_with_its_empty_payload_stops_the_rings_and_unmaps() -> None:
    """RESET_OWNER / RESET_DEVICE carry no payload: the sampler acts on the request alone."""
    for request in (4, 34):  # RESET_OWNER, RESET_DEVICE
        name = f"vuinspect-sampler-reset{request}"
        img = GuestImage(size=1 << 16, name=name)
        ring = SplitRing(img, 8)
        out: list[Frame] = []
        s = Sampler(out.append, 0.1, clock=lambda: 1)
        try:
            setup(s, img, ring, 1)
            s._drain()
            assert maps_mentioning(name) and s.conns[1].rings[0].started
            s.control(2, 1, "f2b", build("main", request, {}))
            s._drain()
            assert b'"event":"stop"' in out[-1].data
            assert not maps_mentioning(name) and not s.conns[1].rings
            assert not s.conns[1].calls_known
        finally:
            s.stop()
            img.close()


def test_the_sampler_starts_and_stops_rings_where_the_protocol_table_does() -> None:
    """sampler's request tables against protocol/effects.py: the requests whose rule stops
    every ring, stops one, or starts one are those the sampler resets, stops or starts on."""
    from vuinspect.dataplane import sampler as sm
    from vuinspect.dataplane import sampler_messages as smm
    from vuinspect.protocol.effects import FRONTEND_RULES

    def having(op: str, **want: object) -> set[int]:
        return {
            int(r)
            for r, rule in FRONTEND_RULES.items()
            if any(
                e.op == op and all(getattr(e, k) == v for k, v in want.items())
                for e in rule.request
            )
        }

    by_then = {
        then: {int(r) for r, (_, _, t) in smm._VRINGS.items() if t is then}
        for then in (smm._STOP, smm._START)
    }
    resets = {int(r) for r, read in smm._CONTROL.items() if read is sm.Sampler._reset}
    assert resets == having("rings_stopped", value="all")
    assert by_then[smm._STOP] == having("rings_stopped", value="index")
    assert by_then[smm._START] == having("vring_const", field="started", value=True)
    assert having("regions_set") | having("region_add") | having("region_remove") == set(
        sm._PENDING
    )


def _table(img: GuestImage, regions: int = 1) -> bytes:
    size = img.size // regions
    return build(
        "main",
        5,
        {
            "nregions": regions,
            "padding": 0,
            "regions": [
                {
                    "guest_phys_addr": img.gpa + i * size,
                    "memory_size": size,
                    "userspace_addr": img.uva + i * size,
                    "mmap_offset": img.mmap_offset + i * size,
                }
                for i in range(regions)
            ],
        },
    )


def _add_region(img: GuestImage, i: int) -> bytes:
    region = {
        "guest_phys_addr": img.gpa + i * 4096,
        "memory_size": 4096,
        "userspace_addr": img.uva + i * 4096,
        "mmap_offset": img.mmap_offset + i * 4096,
    }
    return build("main", 37, {"padding": 0, "region": region})


def test_tables_resent_faster_than_the_ticks_hold_one_table_a_connection() -> None:
    """10 front-ends each resend an 8-fd table 50 times before a tick: each holds the dups
    of its last table only (the older queued ones are closed as the next comes; before,
    all 4 000 dups waited for the tick), and the rings are not read through a closed one."""
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-flood")
    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: 1)
    msg = _table(img, 8)
    try:
        before = fd_count()
        for _ in range(50):
            for conn in range(1, 11):
                s.memory(conn, 1, msg, [img.fd] * 8)
        assert fd_count() == before + 10 * 8
        assert s.fds.held == 10 * 8
        s._drain()
        assert fd_count() == before + 10 * 8  # now held back, one table a connection
        assert not out  # (no note: the superseded tables were skipped, none lost)
        for conn in range(1, 11):
            s.event(event_frame("close", 2, conn, {}))
        s._drain()
        assert fd_count() == before and s.fds.held == 0
    finally:
        s.stop()
        img.close()


def test_past_the_fd_budget_the_sending_connection_is_given_up() -> None:
    """ADD_MEM_REG (one fd each, none supersedes another) from 4 connections, 30 each,
    against a budget of 64: the sampler never holds more than 64; the connection that
    would pass it is given up with a note and its dups are closed; forwarding is the
    caller's (nothing here blocks or raises)."""
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-budget")
    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: 1, fd_budget=64)
    try:
        before = fd_count()
        for conn in range(1, 5):
            for i in range(30):
                s.memory(conn, 1, _add_region(img, i), [img.fd])
                assert s.fds.held <= 64 and fd_count() <= before + 64
        # conns 1 and 2 hold 60; 3 took 4, passed it at its 5th and its 4 were closed then;
        # so did 4
        assert fd_count() == before + 60
        s._drain()
        notes = {f.conn: f.data for f in out if f.kind == "note"}
        assert set(notes) == {3, 4}
        assert b"fd budget (64 fds" in notes[3] and b"no longer sampled" in notes[3]
        assert fd_count() == before + 60 and s.fds.held == 60
        s.memory(3, 1, _add_region(img, 0), [img.fd])  # given up: no more dups for it
        assert s.fds.held == 60
        for conn in range(1, 5):
            s.event(event_frame("close", 2, conn, {}))
        s._drain()
        assert fd_count() == before and s.fds.held == 0
    finally:
        s.stop()
        img.close()


def test_a_closing_connection_closes_its_queued_dups_at_once() -> None:
    """The close of a connection closes the dups its queued memory messages hold right
    away (on the forwarding thread), not at the sampler's next drain."""
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-close")
    s = Sampler([].append, 0.1, clock=lambda: 1)
    try:
        before = fd_count()
        for i in range(20):
            s.memory(1, 1, _add_region(img, i), [img.fd])
        assert fd_count() == before + 20
        s.event(event_frame("close", 2, 1, {}))
        assert fd_count() == before and s.fds.held == 0
        s._drain()
        assert fd_count() == before and 1 not in s.conns
    finally:
        s.stop()
        img.close()


def test_mapped_regions_count_against_the_budget_until_unmapped() -> None:
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-mapped")
    ring = SplitRing(img, 8)
    s = Sampler([].append, 0.1, clock=lambda: 1)
    try:
        before = fd_count()
        setup(s, img, ring, 1)
        s._drain()
        assert maps_mentioning("vuinspect-sampler-mapped")
        assert s.fds.held == s.conns[1].mem.mapped == 1 == fd_count() - before
        s.event(event_frame("close", 2, 1, {}))
        s._drain()
        assert s.fds.held == 0 and fd_count() == before
    finally:
        s.stop()
        img.close()


def test_a_connection_given_up_and_closed_before_a_drain_still_says_so() -> None:
    """Given up for the budget, then closed before the sampler's thread drained: the note
    comes with its close (before the close frame), not never."""
    img = GuestImage(size=1 << 16, name="vuinspect-sampler-closed-note")
    out: list[Frame] = []
    s = Sampler(out.append, 0.1, clock=lambda: 1, fd_budget=8)
    try:
        before = fd_count()
        for i in range(9):
            s.memory(1, 1, _add_region(img, i), [img.fd])
        assert fd_count() == before  # the 9th passed the budget: the 8 dups closed
        s.event(event_frame("close", 2, 1, {}))
        assert [f.kind for f in out] == ["note"] and b"fd budget (8 fds" in out[0].data
        s._drain()
        assert len(out) == 1 and fd_count() == before and s.fds.held == 0
    finally:
        s.stop()
        img.close()


def test_superseding_does_not_pass_over_other_queued_messages() -> None:
    """A SET_INFLIGHT_FD supersedes only the older SET_INFLIGHT_FD: with 3,000 ADD_MEM_REG
    queued it must not walk them on the forwarding thread (it did: a message's cost grew
    with the queue, ~30x here, quadratic in a flood up to the budget)."""
    import os
    import time

    from vuinspect.dataplane.sampler_fds import FdBudget
    from vuinspect.protocol.requests import FrontendRequest as FE

    def inflights_after(adds: int) -> float:
        r, w = os.pipe()
        budget = FdBudget(limit=100_000)
        try:
            for _ in range(adds):
                budget.dup(1, FE.ADD_MEM_REG, [r])
            t = time.perf_counter()
            for _ in range(2000):
                budget.dup(1, FE.SET_INFLIGHT_FD, [r])
            return time.perf_counter() - t
        finally:
            budget.forget(1)
            os.close(r)
            os.close(w)
            assert budget.held == 0

    import resource

    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:  # (3,000 dups at once)
        if hard != resource.RLIM_INFINITY and hard < 4096:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 4096")
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    try:
        few = min(inflights_after(30) for _ in range(3))
        many = min(inflights_after(3000) for _ in range(3))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert many < 5 * few, (few, many)
