"""A real guest through the proxy with ``drop: name == SET_VRING_CALL``: QEMU TCG +
qemu-storage-daemon (vhost-user-blk).  The back-end never gets a call fd, so it
cannot tell the guest that a request completed: SeaBIOS (which polls the used ring)
still boots from the disk, but Linux's first read (the partition scan when
virtio_blk probes /dev/vda) never finishes.  The test states what vuinspect shows:
the drop notes, the ring samples (the request was used, the guest wanted an
interrupt), the notifications (``--trace-notify``: kicks, no call), the ``lost_call``
finding (the samples say no call fd reached the back-end; without that key, as an older
vuinspect wrote them, the drop notes say it), and the connection's end when
qemu-storage-daemon gives up.

Bounded: the guest gets ``STALL_S`` seconds after the disk appeared; then QEMU is
killed by pid (runners.Proc.stop: SIGTERM, then SIGKILL to its process group).
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.blkguest import blk_run
from tests.realworld.captures import load
from vuinspect.demo import runners
from vuinspect.demo.guest import VERDICT
from vuinspect.frames import event_info, ring_frame
from vuinspect.pipeline import Pipeline

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

RULE = "drop: name == SET_VRING_CALL"
STALL_S = 8.0


def test_drop_vring_call_stalls_guest_io(guest, workdir):
    with blk_run(
        workdir,
        guest,
        extra=["--rule", RULE, "--trace-notify"],
        seed="dropcall",
        size_kib=256,
        disk=8 << 20,
        quiet=False,  # the kernel's lines: [vda]
        stop_qemu=signal.SIGTERM,  # QEMU shuts down on its own (SIGKILL after 5 s)
    ) as run:
        run.qemu.wait_for(r"virtio_blk virtio\d+: \[vda\]", 120)  # the driver found the disk ...
        with pytest.raises(runners.RunError, match="no .*within"):
            run.qemu.wait_for(VERDICT, STALL_S)  # ... and its I/O never completes
        assert run.qemu.alive()
        # (leaving the block stops QEMU by pid, then the proxy: the capture is finished)

    cap = load(run.capture)
    notes = [event_info(f) for f in cap.frames if f.kind == "note"]
    fired = [n for n in notes if n.get("rule") == RULE]
    msgs = [m for m in cap.messages if m.kind == "message" and m.channel == "main"]
    calls = [m for m in msgs if m.name == "SET_VRING_CALL"]
    # What vuinspect shows: every SET_VRING_CALL QEMU sent has its drop note (original
    # bytes, nothing sent on) and is recorded as QEMU sent it (with its eventfd) ...
    assert calls and len(fired) == len(calls)
    assert all(n["action"] == "drop" and n["new"] == "" for n in fired)
    assert all(m.fds and "eventfd" in m.fds[0] for m in calls)
    # ... the rest of the start-up went through (kick fd, enable).
    names = [m.name for m in msgs]
    assert "SET_VRING_KICK" in names and "SET_VRING_ENABLE" in names
    # The data plane (ring samples from guest memory, issue 13) shows why: on the ring
    # Linux set up, the back-end used every request the guest made available (used_idx
    # == avail_idx >= 1, nothing in flight) while the guest asked to be interrupted
    # (NO_INTERRUPT clear) -- but no call fd ever reached the back-end, so no interrupt.
    last_enable = max(
        m.frame for m in msgs if m.name == "SET_VRING_ENABLE" and m.payload.get("num") == 1
    )
    rings = [m.payload for m in cap.messages if m.name == "RING" and m.frame > last_enable]
    assert rings, "no ring sample after the last SET_VRING_ENABLE"
    last = rings[-1]
    assert last["used_idx"] == last["avail_idx"] >= 1 and last["in_flight"] == 0, last
    assert not last["avail_flags"] & 1, last  # VRING_AVAIL_F_NO_INTERRUPT clear
    # With --trace-notify (the proxy relays the eventfds) the guest's kicks are counted
    # and no call ever is: the back-end was asked, did the work, and could not answer.
    notifies = [m.payload for m in cap.messages if m.name == "NOTIFY"]
    assert sum(n["count"] for n in notifies if n["signal"] == "kick") >= 1, notifies
    assert not [n for n in notifies if n["signal"] == "call"], notifies
    # Diagnosed: the ring samples say no call fd reached the back-end (the sampler sees
    # only what was forwarded), so the used request the guest waits on is a lost call,
    # naming the vring and the indices, 2 s after the back-end used it.
    assert last.get("call_fd") == "none", last
    lost = [
        (m, p)
        for m in cap.messages
        if m.name == "RING"
        for p in m.problems
        if p.code == "lost_call"
    ]
    assert lost, "no lost_call diagnosed"
    # (none while SeaBIOS, which asks for no interrupts and polls, drove the ring)
    assert all(m.frame > last_enable for m, _ in lost), [(m.frame, p.text) for m, p in lost]
    m, p = lost[-1]
    assert f"vring {m.payload['vring']}:" in p.text and "no call fd" in p.text, p.text
    assert f"used idx {last['used_idx']}" in p.text, p.text
    # A capture of an older vuinspect (ring samples without call_fd) tells it too: the
    # rule's drop note before each SET_VRING_CALL says the back-end never got the fd.
    old = [
        ring_frame(f.ts_ns, f.conn, {k: v for k, v in json.loads(f.data).items() if k != "call_fd"})
        if f.kind == "ring"
        else f
        for f in cap.frames
    ]
    relost = [
        (m.frame, p.text) for m in Pipeline().run(old) for p in m.problems if p.code == "lost_call"
    ]
    assert relost == [(m.frame, p.text) for m, p in lost], relost
    # qemu-storage-daemon (libvhost-user) then writes to the call fd it never got and
    # stops serving: vuinspect shows the connection ending at QEMU's next request.
    assert "vu_panic: Error writing eventfd" in (workdir / "qsd.log").read_text()
    stop = [m for m in msgs if m.name == "GET_VRING_BASE"][-1]
    assert [p.code for p in stop.problems] == ["missing_reply"]
