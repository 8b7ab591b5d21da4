"""Stop samples at RESET_OWNER / RESET_DEVICE: no reply, so no base to check them against.

A reset stops every ring at once and nothing answers it, so a peer may take the rings'
memory back right away (a back-end scrubbing them, a front-end freeing them to a heap
that zeroes): the sampler's thread, behind the forwarding, can read that memory for the
stop sample.  Such a read must raise no ring problem (ring_backwards, ring_index_ahead)
and must not stand as the ring's last position: the last good look does.  A true one
(a request still in flight when the ring was reset) is still said.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vuinspect
from tests.blkguest import ring_samples
from vuinspect.capture import CaptureError, CaptureReader
from vuinspect.dataplane.rings import RingSample, follows
from vuinspect.demo import runners
from vuinspect.encode import build
from vuinspect.frames import event_frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.problems import DATAPLANE_CODES
from vuinspect.protocol.requests import FrontendRequest as FE
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend

from .guestimage import GPA, GuestImage, SplitRing
from .ringbackend import RingBackend
from .test_ring_release import _sampler

pytestmark = pytest.mark.timeout(30)
NS = 1_000_000_000
NUM = 8
VERSION_1 = 1 << 32
#: The rings at the reset: vring 0 idle (avail = used), vring 1 with 2 requests in flight.
AT_RESET = {0: (5, 5), 1: (6, 4)}


def _scrub(ring: SplitRing, how: str) -> None:
    """What RingBackend's ``scrub`` does to a ring (the sampler-level tests')."""
    ring.img.write(ring.desc, bytes(16 * ring.num))
    ring.img.write(ring.avail, (b"\xff" if how == "junk" else b"\0") * (6 + 2 * ring.num))
    ring.img.write(ring.used, bytes(6 + 8 * ring.num))


@pytest.mark.parametrize("request_", [FE.RESET_OWNER, FE.RESET_DEVICE], ids=["owner", "device"])
@pytest.mark.parametrize("how", ["zero", "junk"])
def test_a_reset_stop_sample_of_scrubbed_memory_is_not_the_ring(request_: int, how: str) -> None:
    """The ring's last look says avail 5 used 5; the reset's stop sample is read from
    memory scrubbed since: no problem, and the last sample still says 5 / 5."""
    t = 1_000 * NS
    with _sampler(f"vuinspect-reset-{how}", NUM, t) as (s, ring, out):
        s._drain()
        ring.set_avail_idx(5)
        ring.set_used_idx(5)
        s._tick(t + NS // 10)
        s.control(t + NS // 5, 1, "f2b", build("main", request_, {}))
        _scrub(ring, how)  # (before the sampler's thread gets to the reset)
        s._drain()
    rings = [f for f in out if f.kind == "ring"]
    assert all(b'"avail_idx":5,"used_idx":5' in f.data for f in rings[1:]), rings
    msgs = Pipeline(device="blk").run([event_frame("open", 0, 1, {"label": "t"}), *out])
    codes = [c for m in msgs for c in m.problem_codes]
    assert codes == [], codes


@pytest.mark.parametrize(
    ("moved", "kept"),
    [
        ((7, 7), True),  # the last 2 requests done before the reset: said, not lost
        ((5, 5), True),  # nothing moved
        ((6, 5), True),  # one more made available, two used
        ((5 + NUM + 1, 5 + NUM + 1), False),  # more than a ring's worth: not checkable
    ],
)
def test_a_reset_stop_sample_that_follows_from_the_last_look_is_kept(
    moved: tuple[int, int], kept: bool
) -> None:
    """A stop sample that the ring could have reached from its last look (both indices
    forward by at most ``num``, nothing impossible) is kept: it is the ring's end, and
    the progress up to the reset is not lost (nor a ring_reset_in_flight made of the
    last look's requests that were done by then)."""
    t = 1_000 * NS
    with _sampler("vuinspect-reset-kept", NUM, t) as (s, ring, out):
        s._drain()
        ring.set_avail_idx(5)
        ring.set_used_idx(3)
        s._tick(t + NS // 10)
        ring.set_avail_idx(moved[0])
        ring.set_used_idx(moved[1])
        s.control(t + NS // 5, 1, "f2b", build("main", FE.RESET_OWNER, {}))
        s._drain()
    stops = [f.data for f in out if f.kind == "ring" and b'"event":"stop"' in f.data]
    assert len(stops) == kept, stops
    if kept:  # (its indices: chains are read from descriptors nothing vouches for)
        assert b'"avail_idx":%d,"used_idx":%d' % moved in stops[0]
        assert b'"chains"' not in stops[0] and b'"problems":[]' in stops[0]


def test_follows_vouches_for_forward_moves_within_a_ring_only() -> None:
    def split(avail: int, used: int) -> RingSample:
        return RingSample(0, 0, "split", NUM, avail_idx=avail, used_idx=used)

    def packed(avail: int, used: int) -> RingSample:
        return RingSample(0, 0, "packed", NUM, avail_idx=avail, used_idx=used)

    assert follows(split(5, 3), split(5, 3)) and follows(split(5, 3), split(13, 11))
    assert not follows(split(5, 5), split(0, 0))  # zeroed: back
    assert not follows(split(40, 40), split(0, 0))  # zeroed: 65 496 forward
    assert not follows(split(5, 3), split(14, 3))  # more than a ring's worth
    assert not follows(None, split(5, 3))
    assert not follows(split(5, 3), RingSample(0, 0, "split", NUM, ok=False))
    # (left: zeroed memory within num of the u16 wrap reads as a small forward move)
    assert follows(split(0xFFFC, 0xFFFC), split(0, 0))
    # packed: a walk over reused memory moves (zeroed descriptors read as used on an odd
    # lap), so only a ring that did not move is vouched for
    assert follows(packed(5, 3), packed(5, 3)) and not follows(packed(5, 3), packed(5, 5))
    assert not follows(split(5, 3), packed(5, 3))


# -- through the proxy: a Python front-end, the proxy, a back-end that scrubs at reset --


@contextlib.contextmanager
def _through_proxy(work: Path, how: str) -> Iterator[tuple[Path, Frontend, RingBackend]]:
    """Front-end -> ``vuinspect proxy`` -> RingBackend(scrub=how); the proxy stopped
    (by pid, its capture finished) when the block ends."""
    be_sock, px_sock, cap = work / "be.sock", work / "px.sock", work / "cap.pcapng"
    listener = wire.listen(str(be_sock))
    backend = RingBackend(listener, scrub=how)
    try:
        # (a long interval: the samples are those of the control messages)
        extra = ["--device", "blk", "--rings", "30s", "-q"]
        with runners.proxy(px_sock, be_sock, cap, work, extra=extra):
            fe = Frontend(wire.connect(str(px_sock), retries=50))
            try:
                yield cap, fe, backend
            finally:
                fe.sock.close()
            # (its close frame in the capture before the proxy stops: a stop no sample
            # closed is judged there)
            _wait(lambda: "close" in _kinds(cap), "the connection's close frame")
    finally:
        backend.close()
        listener.close()


def _start(fe: Frontend, img: GuestImage, rings: dict[int, SplitRing]) -> None:
    """Memory table and ring setup as a front-end sends them; each ring's indices are
    already where ``rings`` put them (its base: the used index)."""
    region = struct.pack("=IIQQQQ", 1, 0, img.gpa, img.size, img.uva, img.mmap_offset)
    fe.call(wire.SET_MEM_TABLE, region, fds=[img.fd], need_reply=True)
    for i, ring in rings.items():
        fe.call(wire.SET_VRING_NUM, struct.pack("=II", i, ring.num))
        addrs = (img.uva_of(ring.desc), img.uva_of(ring.used), img.uva_of(ring.avail))
        fe.call(wire.SET_VRING_ADDR, struct.pack("=IIQQQQ", i, 0, *addrs, 0))
        fe.call(wire.SET_VRING_BASE, struct.pack("=II", i, ring.used_idx))
        fe.set_vring_fd(wire.SET_VRING_CALL, i)
        fe.set_vring_fd(wire.SET_VRING_KICK, i)


def _kinds(cap: Path) -> list[str]:
    """The frame kinds of a capture still written (whole frames only)."""
    out: list[str] = []
    with contextlib.suppress(CaptureError, OSError), CaptureReader(str(cap)) as reader:
        out.extend(f.kind for f in reader)
    return out


def _wait(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("request_", "how"),
    [(FE.RESET_OWNER, "zero"), (FE.RESET_DEVICE, "junk")],
    ids=["owner-zero", "device-junk"],
)
def test_a_backend_scrubbing_its_rings_at_reset_raises_no_ring_problem(
    request_: int, how: str
) -> None:
    """Two rings run (vring 1 with 2 requests in flight), the front-end resets the device,
    the back-end scrubs the rings at once, the front-end starts vring 0 again.  The rows
    say no ring problem but the true ring_reset_in_flight of vring 1, and each ring's
    last sample before the restart is its last good position."""
    img = GuestImage(size=1 << 16, name=f"vuinspect-reset-proxy-{how}")
    rings = {i: SplitRing(img, NUM, base=GPA + 0x1000 + 0x1000 * i) for i in AT_RESET}
    for i, (avail, used) in AT_RESET.items():
        rings[i].set_avail_idx(avail)
        rings[i].set_used_idx(used)
    work = Path(tempfile.mkdtemp(prefix="vurst-", dir="/tmp"))
    try:
        with _through_proxy(work, how) as (cap, fe, backend):
            features = fe.call(wire.GET_FEATURES)
            assert features is not None
            fe.call(wire.SET_OWNER)
            fe.call(wire.SET_FEATURES, wire.U64.pack(VERSION_1), need_reply=True)
            _start(fe, img, rings)
            _wait(lambda: len(ring_samples(cap)) >= 2, "the two start samples")
            fe.call(request_, need_reply=True)
            assert backend.reset.wait(5), "the back-end never saw the reset"
            # the front-end sets vring 0 up again on fresh rings
            fresh = {0: SplitRing(img, NUM, base=GPA + 0x8000)}
            _start(fe, img, fresh)
            _wait(
                lambda: sum(s.get("event") == "start" for s in ring_samples(cap)) >= 3,
                "the restart's sample",
            )
        rows = [m.to_dict() for m in vuinspect.open(str(cap), device="blk")]
    finally:
        img.close()
        shutil.rmtree(work, ignore_errors=True)
    # each ring's samples up to the restart (the third start sample)
    before: dict[int, list[dict]] = {0: [], 1: []}
    starts = 0
    for r in rows:
        if r["kind"] != "ring":
            continue
        starts += r["payload"].get("event") == "start"
        if starts <= 2:
            before[r["payload"]["vring"]].append(r["payload"])
    for i, (avail, used) in AT_RESET.items():
        last = before[i][-1]
        assert (last["avail_idx"], last["used_idx"]) == (avail, used), before[i]
    flagged = [
        (p["code"], p.get("text", ""))
        for r in rows
        for p in r["problems"]
        if p["code"] in DATAPLANE_CODES
    ]
    (code, text), *rest = flagged or [("", "")]
    assert code == "ring_reset_in_flight" and not rest, flagged  # the true one only
    assert "vring 1" in text and "2 in flight" in text, text
