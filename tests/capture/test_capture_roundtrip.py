"""Writer -> reader round trips, interface layout, file safety, pipes and stdin."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading

import dpkt
import pytest
from capture_samples import BASE_NS, epb, exported_pdu, idb, mixed_frames, pseudo, shb, small_frames

from vuinspect.capture import CaptureError, CaptureReader, CaptureWriter, read_frames
from vuinspect.capture.pcapng import EXPORTED_PDU_PREFIX
from vuinspect.capture.pseudohdr import encode
from vuinspect.frames import Frame

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, frames, **kw):
    with CaptureWriter(path, **kw) as w:
        for f in frames:
            w.write(f)
    return w


@pytest.mark.parametrize("big_endian", [False, True])
def test_round_trip_mixed(tmp_path, big_endian):
    frames = mixed_frames()
    w = write(tmp_path / "c.pcapng", frames, big_endian=big_endian)
    assert w.frames_written == len(frames)
    reader = CaptureReader(tmp_path / "c.pcapng")
    assert list(reader) == frames
    assert reader.error is None and reader.skipped == 0 and reader.frames_read == len(frames)
    assert reader.sections[0].order == (">" if big_endian else "<")


def test_interfaces_one_per_conn_and_channel(tmp_path):
    write(tmp_path / "c.pcapng", mixed_frames())
    reader = CaptureReader(tmp_path / "c.pcapng")
    list(reader)
    got = [(i.name, i.description, i.linktype, i.tsresol) for i in reader.interfaces]
    assert got == [
        ("conn 7", "conn 7 main", 252, 9),
        ("/run/vhost/blk0.sock", "conn 1 main", 252, 9),
        ("/run/vhost/blk0.sock", "conn 1 backend", 252, 9),
        ("/tmp/net\u00e9.sock", "conn 2 main", 252, 9),
        ("conn 4294967295", "conn 4294967295 backend", 252, 9),
        ("/tmp/late.sock", "conn 7 backend", 252, 9),
    ]


def test_events_go_on_the_main_interface_and_keep_their_channel(tmp_path):
    frames = [
        Frame(1, 3, "backend", "b2f", b"x"),
        Frame(2, 3, "backend", "f2b", b'{"text":"n"}', (), "note"),
    ]
    write(tmp_path / "c.pcapng", frames)
    reader = CaptureReader(tmp_path / "c.pcapng")
    assert list(reader) == frames
    assert [i.description for i in reader.interfaces] == ["conn 3 backend", "conn 3 main"]


def test_frames_reach_the_file_only_as_whole_blocks(tmp_path):
    path = tmp_path / "c.pcapng"
    w = CaptureWriter(path)
    shb_size = os.path.getsize(path)
    assert shb_size > 0  # the section header is written at once, for live readers
    for f in small_frames(5):
        w.write(f)
    assert os.path.getsize(path) == shb_size  # buffered until flush
    w.flush()
    assert list(read_frames(path)) == small_frames(5)
    big = Frame(BASE_NS, 1, "main", "f2b", bytes(40000))
    w.write(big)
    w.write(big)  # passes 64 KiB: flushed by itself
    reader = CaptureReader(path)
    assert list(reader) == small_frames(5) + [big, big] and reader.error is None
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.write(big)


def test_writer_to_file_object_leaves_it_open():
    buf = io.BytesIO()
    write(buf, small_frames(3))
    assert not buf.closed
    buf.seek(0)
    assert list(read_frames(buf)) == small_frames(3)


def test_file_is_created_0600_and_existing_file_tightened(tmp_path):
    old = os.umask(0)
    try:
        write(tmp_path / "new.pcapng", small_frames(1))
        existing = tmp_path / "old.pcapng"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        write(existing, small_frames(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.pcapng").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o600
    assert list(read_frames(existing)) == small_frames(1)


def test_symlink_target_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "cap.pcapng"
    link.symlink_to(victim)
    with pytest.raises(
        CaptureError, match="refusing to write capture .*cap.pcapng: it is a symbolic link"
    ):
        CaptureWriter(link)
    assert victim.read_bytes() == b"precious"
    dangling = tmp_path / "dangling.pcapng"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(CaptureError, match="symbolic link"):
        CaptureWriter(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_unwritable_target_is_one_clear_error(tmp_path):
    with pytest.raises(CaptureError, match="cannot create capture .*: No such file or directory"):
        CaptureWriter(tmp_path / "missing-dir" / "c.pcapng")


def test_bad_timestamp_is_refused_before_anything_is_buffered(tmp_path):
    w = CaptureWriter(tmp_path / "c.pcapng")
    with pytest.raises(ValueError, match="timestamp"):
        w.write(Frame(2**64, 1, "main", "f2b", b""))
    with pytest.raises(ValueError, match="timestamp"):
        w.write(Frame(-1, 1, "main", "f2b", b""))
    w.write(Frame(5, 1, "main", "f2b", b"ok"))
    w.close()
    assert list(read_frames(tmp_path / "c.pcapng")) == [Frame(5, 1, "main", "f2b", b"ok")]


def test_concurrent_writers_never_interleave_blocks(tmp_path):
    path = tmp_path / "c.pcapng"
    w = CaptureWriter(path)

    def run(conn):
        for i in range(3000):
            w.write(Frame(i, conn, "main", "f2b", bytes([conn]) * (i % 50)))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    reader = CaptureReader(path)
    got = list(reader)
    assert reader.error is None and len(got) == 12000 and w.frames_written == 12000
    for conn in range(4):
        mine = [f for f in got if f.conn == conn]
        assert [f.ts_ns for f in mine] == list(range(3000))
        assert all(f.data == bytes([conn]) * (f.ts_ns % 50) for f in mine)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_small_reads_give_the_same_frames(tmp_path, chunk):
    frames = mixed_frames()
    write(tmp_path / "c.pcapng", frames)
    with open(tmp_path / "c.pcapng", "rb") as f:
        assert list(CaptureReader(f, chunk_size=chunk)) == frames


def test_other_timestamp_resolutions_convert_exactly():
    payload = exported_pdu(b"vhost_user", pseudo(1, b"d"))
    data = (
        shb()
        + idb(tsresol=6)
        + idb(tsresol=0x80 | 20)
        + idb(tsresol=12, tsoffset=5)
        + idb(tsresol=None)
        + idb(tsresol=0, tsoffset=10)
    )
    data += epb("<", 0, 1_764_000_000_123_456, payload)
    data += epb("<", 1, 3 * 2**20 + 1, payload)  # 3 s + 2^-20 s = 953.67431640625 ns -> floor
    data += epb("<", 2, 123_456_789_123, payload)  # picoseconds: floor to ns
    data += epb("<", 3, 42, payload)  # default: microseconds
    data += epb("<", 4, 7, payload)  # seconds + 10 s offset
    got = [f.ts_ns for f in read_frames(io.BytesIO(data))]
    assert got == [1_764_000_000_123_456_000, 3_000_000_953, 5_123_456_789, 42_000, 17_000_000_000]


def test_reads_a_capture_written_by_dpkt():
    """Another pcapng writer (dpkt: microsecond timestamps) with our packet layout."""
    buf = io.BytesIO()
    w = dpkt.pcapng.Writer(buf, linktype=252)
    frames = small_frames(4)
    for f in frames:
        w.writepkt(EXPORTED_PDU_PREFIX + encode(f), ts=f.ts_ns / 1e9)
    buf.seek(0)
    reader = CaptureReader(buf)
    got = list(reader)
    assert reader.error is None
    assert [g.data for g in got] == [f.data for f in frames]
    # dpkt rounds a float to microseconds: within 1 us, and whole microseconds
    assert all(
        abs(g.ts_ns - f.ts_ns) <= 1000 and g.ts_ns % 1000 == 0
        for g, f in zip(got, frames, strict=True)
    )


def test_reading_a_pipe_follows_a_live_writer():
    r, wfd = os.pipe()
    reader_file = os.fdopen(r, "rb")
    writer = CaptureWriter(os.fdopen(wfd, "wb"))
    first, second = small_frames(2)[1:]
    writer.write(first)
    writer.flush()
    it = iter(CaptureReader(reader_file))
    assert next(it) == first  # arrives while the writer is still open
    writer.write(second)
    writer.close()
    os.close(wfd)
    assert next(it) == second
    assert list(it) == []


@pytest.mark.timeout(60)
def test_stdin_and_stdout_dash(tmp_path):
    frames = mixed_frames()
    write(tmp_path / "c.pcapng", frames)
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = (
        "import sys\nfrom vuinspect.capture import CaptureReader\n"
        "r = CaptureReader('-')\nfs = list(r)\n"
        "print(len(fs), sum(len(f.fds) for f in fs), r.error)"
    )
    with open(tmp_path / "c.pcapng", "rb") as f:
        out = subprocess.run(
            [sys.executable, "-c", code],
            stdin=f,
            capture_output=True,
            env=env,
            timeout=50,
            check=True,
        ).stdout.decode()
    assert out.split() == [str(len(frames)), str(sum(len(f.fds) for f in frames)), "None"]
    # and the writer on stdout, through a real pipe, read back in this process
    wcode = (
        "from vuinspect.capture import CaptureWriter\nfrom vuinspect.frames import Frame\n"
        "with CaptureWriter('-') as w:\n"
        "    for i in range(1000): w.write(Frame(i, 1, 'main', 'f2b', b'x' * (i % 30)))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", wcode], stdout=subprocess.PIPE, env=env)
    try:
        got = list(read_frames(proc.stdout))
    finally:
        proc.stdout.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert got == [Frame(i, 1, "main", "f2b", b"x" * (i % 30)) for i in range(1000)]


@pytest.mark.timeout(30)
def test_writer_to_a_fifo_like_extcap(tmp_path):
    """Wireshark's extcap hands us a FIFO path: opening it must not truncate or chmod anything odd."""
    fifo = tmp_path / "extcap.fifo"
    os.mkfifo(fifo, 0o644)
    got = []
    reader = threading.Thread(target=lambda: got.extend(read_frames(fifo)))
    reader.start()
    write(fifo, small_frames(20))
    reader.join(timeout=20)
    assert got == small_frames(20)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_the_documented_hex_example_is_what_the_writer_writes():
    with open(os.path.join(ROOT, "docs", "capture-format.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("## 5. A real packet", 1)[1].split("```", 2)[1]
    documented = bytes.fromhex("".join(line[6:] for line in section.strip().splitlines()))
    buf = io.BytesIO()
    with CaptureWriter(buf, big_endian=False) as w:
        w.write(
            Frame(
                1764000000123456789,
                1,
                "main",
                "f2b",
                bytes.fromhex("0c00000001000000080000000000000000000000"),
                ("eventfd:[eventfd] flags=O_RDWR|O_NONBLOCK",),
            )
        )
    assert buf.getvalue().endswith(documented) and len(documented) == 144
