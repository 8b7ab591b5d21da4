"""Merged captures: the capture of origin of each interface and the connection numbers shown."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest
from capture_samples import block, epb, exported_pdu, option, pseudo, shb

from vuinspect.capture import CaptureReader, build_index
from vuinspect.capture.pcapng import Interface, Origins, Section


def idb(description: str, name: str = "sock") -> bytes:
    opts = (
        option("<", 2, name.encode())
        + option("<", 3, description.encode())
        + option("<", 9, b"\x09")
    )
    return block("<", 1, struct.pack("<HHI", 252, 0, 0) + opts + struct.pack("<HH", 0, 0))


def packet(
    iface: int,
    ts: int,
    conn: int,
    data: bytes = b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00",
) -> bytes:
    return epb("<", iface, ts, exported_pdu(b"vhost_user", pseudo(conn, data)), flags=1)


def run(capture_id: str | None, t0: int, conns: tuple[int, ...] = (1,)) -> bytes:
    """One run's file: an IDB and a GET_FEATURES per connection."""
    out = shb()
    for i, c in enumerate(conns):
        out += idb(f"conn {c} main" + (f" capture {capture_id}" if capture_id else ""))
        out += packet(i, t0 + i, c)
    return out


def shown(data: bytes) -> list[int]:
    return [f.conn for f in CaptureReader(io.BytesIO(data))]


def test_one_capture_keeps_its_numbers() -> None:
    assert shown(run(None, 10, (3, 1, 7))) == [3, 1, 7]


def test_sections_are_origins_and_a_capture_id_joins_them() -> None:
    assert shown(run(None, 10, (1, 2)) + run(None, 20, (2, 1))) == [1, 2, 3, 4]
    # the same capture id in two sections (the files of one run, concatenated): one capture
    assert shown(run("r1", 10, (1, 2)) + run("r1", 20, (2, 1))) == [1, 2, 2, 1]
    assert shown(run("r1", 10, (1,)) + run("r2", 20, (1,))) == [1, 2]


def test_section_header_comment_names_the_capture() -> None:
    def shb_with(cid: str) -> bytes:
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + option(
            "<", 1, f"vuinspect capture {cid}".encode()
        )
        return block("<", 0x0A0D0D0A, body + struct.pack("<HH", 0, 0))

    a = shb_with("same") + idb("conn 1 main") + packet(0, 1, 1)
    b = shb_with("same") + idb("conn 1 main") + packet(0, 2, 1)
    assert shown(a + b) == [1, 1]
    r = CaptureReader(io.BytesIO(a))
    list(r)
    assert r.sections[0].capture_id == "same"


def test_renumbering_follows_first_sight() -> None:
    o = Origins()
    s = Section(0, 0, "<")
    for desc in ("conn 1 main", "conn 2 main", "conn 1 main", "conn 1 backend"):
        iface = Interface(len(s.interfaces), 252, description=desc)
        s.interfaces.append(iface)
        o.add(iface, s)
    assert [i.origin for i in s.interfaces] == [0, 0, 1, 1] and o.multi
    assert o.conn(1, 1) == 3  # 1 and 2 are the first capture's
    assert o.conn(0, 5) == 5 and o.conn(1, 5) == 6 and o.conn(1, 4) == 4
    assert o.conn(0, 4) == 7  # taken by the second capture first
    assert o.conn(1, 1) == 3  # stable


@pytest.mark.skipif(not shutil.which("mergecap"), reason="needs mergecap")
def test_mergecap_of_runs_with_identical_interfaces_needs_the_capture_id(tmp_path) -> None:
    """mergecap -I all (its default) merges byte-identical IDBs; an id keeps them apart."""
    paths = []
    for name, cid, t0 in (("a", "run-a", 10), ("b", "run-b", 20)):
        p = tmp_path / f"{name}.pcapng"
        p.write_bytes(run(cid, t0, (1, 2)))
        paths.append(str(p))
    merged = str(tmp_path / "m.pcapng")
    subprocess.run(["mergecap", "-w", merged, *paths], check=True, capture_output=True, timeout=60)
    frames = list(CaptureReader(merged))
    assert [f.conn for f in frames] == [1, 2, 3, 4]
    with build_index(merged) as index:
        assert [index.frame(i).conn for i in range(len(index))] == [1, 2, 3, 4]


def test_renumbering_past_the_u32_range_stays_linear() -> None:
    """A crafted file claiming conn 2^32-1 first: later numbers wrap to the lowest free
    one, found by one upward search overall (not one per claim)."""
    import time

    o = Origins()
    assert o.conn(0, 0xFFFFFFFF) == 0xFFFFFFFF
    t0 = time.perf_counter()
    got = [o.conn(0, c) for c in range(1, 20_001)] + [o.conn(1, c) for c in range(1, 20_001)]
    assert got[:3] == [1, 2, 3] and got[20_000:20_003] == [20_001, 20_002, 20_003]
    assert len(set(got)) == 40_000 and max(got) <= 0xFFFFFFFF
    assert o.conn(1, 0xFFFFFFFF) == 40_001
    assert time.perf_counter() - t0 < 2


def test_a_renumbered_conn_does_not_take_a_later_conn_of_its_own_capture() -> None:
    """cat a b, a with conn 1, b with conns 1 and 2: b's conn 1 is shown as 2, so b's conn 2 is 3."""
    assert shown(run(None, 10, (1,)) + run(None, 20, (1, 2))) == [1, 2, 3]


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="mergecap not installed")
def test_two_recorded_runs_stay_apart_after_mergecap(tmp_path) -> None:
    """The proxy's recorder names its run in every interface block: two runs with the same
    socket, connection number and timing stay two connections once mergecap merged them
    (mergecap folds byte-identical interface blocks into one)."""
    from vuinspect.frames import event_frame
    from vuinspect.proxy.recorder import Recorder

    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pcapng"
        rec = Recorder(str(path), interval=0.001)
        rec.start()
        rec.event(event_frame("open", 1_000, 1, {"label": "/tmp/vu.sock"}))
        rec.data(2_000, 1, "main", "f2b", struct.pack("<III", 1, 1, 0), ())
        rec.close()
        files.append(str(path))
    merged = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), *files], check=True, capture_output=True)
    conns = {f.conn for f in CaptureReader(str(merged))}
    assert conns == {1, 2}
    assert (
        Recorder(str(tmp_path / "c.pcapng")).capture_id
        != Recorder(str(tmp_path / "d.pcapng")).capture_id
    )
