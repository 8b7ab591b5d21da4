"""``vuinspect replay``: the recorded front-end side against a live back-end.

The real test replays captures/blk.pcapng (QEMU 7.2 + qemu-storage-daemon) against
a fresh qemu-storage-daemon exporting an image of the recorded capacity: the
back-end must answer as recorded, except what depends on guest I/O (the
capture holds no guest memory, so the rings the replay hands over are empty
and GET_VRING_BASE reports 0 where the guest had made progress).  A read-only
export offers VIRTIO_BLK_F_RO: the replay exits 1 and names the bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from vuinspect.cli import main
from vuinspect.demo import runners
from vuinspect.encode import build
from vuinspect.proxy.fds import format_size
from vuinspect.reproduce.load import read_messages
from vuinspect.reproduce.replay import make_fd, recorded_size, region_sizes
from vuinspect.testing import wire
from vuinspect.testing.backend import Backend

from .recording import frame as _f
from .recording import recording as _recording

pytestmark = pytest.mark.timeout(60)

BLK = Path(__file__).resolve().parents[2] / "captures" / "blk.pcapng"
#: Differences that are not the back-end's behaviour: guest I/O progress on the rings.
IGNORE_GUEST_IO = ["GET_VRING_BASE:payload.num", "GET_VRING_BASE:payload.avail_idx"]


def recorded_capacity() -> int:
    """Bytes of the recorded disk: capacity (512-byte sectors) from the GET_CONFIG reply."""
    reply = next(m for m in read_messages(str(BLK)) if m.name == "GET_CONFIG" and m.reply)
    return int.from_bytes(bytes.fromhex(reply.payload["data"])[:8], "little") * 512


@pytest.fixture
def qsd():
    """Start qemu-storage-daemon on a fresh image; yields a starter taking export options."""
    try:
        program = runners.require("qemu-storage-daemon")
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    work = Path(tempfile.mkdtemp(prefix="vurp-", dir="/tmp"))  # short socket paths
    started: list[runners.Proc] = []
    with contextlib.ExitStack() as stack:

        def start(**export: str) -> Path:
            n = len(started)
            image = work / f"disk{n}.img"
            with open(image, "wb") as f:
                f.truncate(recorded_capacity())
            sock = work / f"qsd{n}.sock"
            opts = ",".join(f"{k}={v}" for k, v in {"writable": "on", **export}.items())
            argv = [
                program,
                "--blockdev",
                f"driver=file,node-name=file,filename={image}",
                "--export",
                f"type=vhost-user-blk,id=exp,node-name=file,addr.type=unix,addr.path={sock},{opts}",
            ]
            proc = stack.enter_context(runners.running(f"qsd{n}", argv, work))
            started.append(proc)
            runners.wait_for_socket(sock, 10, proc)
            return sock

        yield start
    shutil.rmtree(work, ignore_errors=True)


def replay(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["replay", *map(str, argv)])
    return rc, capsys.readouterr().out


def test_replay_blk_against_fresh_storage_daemon(qsd, tmp_path, capsys) -> None:
    sock = qsd()
    out_cap = tmp_path / "replay.pcapng"
    ignores = [a for i in IGNORE_GUEST_IO for a in ("--ignore", i)]
    rc, out = replay(capsys, BLK, "--connect", sock, "-w", out_cap, *ignores)
    assert rc == 0, out
    assert out.strip().endswith("(equal)")

    # Without the ignores, exactly the guest's ring progress differs (1 and 35 -> 0).
    rc, out = replay(capsys, BLK, "--connect", qsd(), "--json")
    assert rc == 1
    report = json.loads(out)
    diffs = [
        (e["name"], f["field"], f["a"], f["b"]) for e in report["entries"] for f in e["fields"]
    ]
    assert diffs == [
        ("GET_VRING_BASE", "payload.num", 1, 0),
        ("GET_VRING_BASE", "payload.avail_idx", 1, 0),
        ("GET_VRING_BASE", "payload.num", 35, 0),
        ("GET_VRING_BASE", "payload.avail_idx", 35, 0),
    ]
    assert report["counts"] == {"same": 42, "different": 2, "missing": 0, "unexpected": 0}

    # The replay is a capture like any other: diff it against the recording.
    assert main(["diff", str(BLK), str(out_cap), *ignores]) == 0
    replayed = read_messages(str(out_cap))
    mem = [m for m in replayed if m.name == "ADD_MEM_REG" and not m.reply]
    assert [m.fds for m in mem] == [("guest-memory: memfd:memory-backend-memfd size=256MiB",)] * 2
    acks = [m for m in replayed if m.name == "ADD_MEM_REG" and m.reply]
    assert [m.payload["result"] for m in acks] == [0, 0]  # the back-end mapped our memfds


def test_replay_against_read_only_export_names_the_bit(qsd, capsys) -> None:
    sock = qsd(writable="off")
    ignores = [a for i in IGNORE_GUEST_IO for a in ("--ignore", i)]
    rc, out = replay(capsys, BLK, "--connect", sock, *ignores)
    assert rc == 1
    assert "GET_FEATURES reply: different" in out
    assert "payload.features: 0x175007e46 -> 0x175007e66  (+RO)" in out
    assert out.splitlines()[-1] == "42 same, 2 different, 0 missing, 0 unexpected"


# -- without a real back-end: timeouts, a back-end that leaves, the back-end channel -----------


def _serve(backend_kw: dict, path: Path) -> tuple[threading.Thread, list[Backend]]:
    listener = wire.listen(str(path))
    got: list[Backend] = []

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        b = Backend(conn, **backend_kw)
        got.append(b)
        b.serve()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


def test_backend_channel_answered_as_recorded(tmp_path, capsys) -> None:
    answer = build("backend", 2, {"result": 7}, reply=True, layout="ack")
    rec = _recording(
        tmp_path,
        [
            _f(2, "main", "f2b", build("main", 1)),
            _f(3, "main", "b2f", build("main", 1, {"features": 1 << 30}, reply=True)),
            _f(
                4,
                "main",
                "f2b",
                build("main", 21, need_reply=True),
                ("socket:unix-stream (back-end channel, relayed by vuinspect)",),
            ),
            _f(5, "backend", "b2f", build("backend", 2, need_reply=True)),
            _f(6, "backend", "f2b", answer),
            _f(7, "main", "b2f", build("main", 21, {"result": 0}, reply=True, layout="ack")),
            _f(8, "main", "f2b", build("main", 13, {"index": 0}), ("eventfd",)),
        ],
    )
    sock = tmp_path / "be.sock"
    t, got = _serve({"backend_requests": 1}, sock)
    rc, out = replay(
        capsys,
        rec,
        "--connect",
        sock,
        "--timeout",
        "2",
        "--ignore",
        "GET_FEATURES:payload.features",
    )
    t.join(5)
    assert rc == 0, out
    (backend,) = got
    assert [m.raw for m in backend.channel_replies] == [answer]  # the recorded answer, result 7
    call = [m for m in backend.received if m.request == wire.SET_VRING_CALL]
    assert len(call) == 1 and call[0].inodes  # an fd travelled with it


def test_missing_reply_times_out_and_is_reported(tmp_path, capsys) -> None:
    rec = _recording(
        tmp_path,
        [
            _f(2, "main", "f2b", build("main", 1)),
            _f(3, "main", "b2f", build("main", 1, {"features": 1}, reply=True)),
            _f(4, "main", "f2b", build("main", 3)),
        ],
    )
    sock = tmp_path / "stall.sock"
    t, got = _serve({"stall": True}, sock)
    rc, out = replay(capsys, rec, "--connect", sock, "--timeout", "0.3")
    t.join(5)
    assert rc == 1
    assert "GET_FEATURES reply: missing" in out
    assert "note: frame 2 GET_FEATURES: no reply within 0.3 s" in out
    assert got[0].received[-1].request == 3  # went on after the timeout


def test_backend_closing_early_ends_the_replay(tmp_path, capsys) -> None:
    rec = _recording(
        tmp_path,
        [
            _f(
                2 + i,
                "main",
                "f2b" if i % 2 == 0 else "b2f",
                build("main", 1, None if i % 2 == 0 else {"features": 1}, reply=i % 2 == 1),
            )
            for i in range(20)
        ],
    )
    path = tmp_path / "close.sock"
    listener = wire.listen(str(path))

    def close_at_once() -> None:
        conn, _ = listener.accept()
        conn.close()

    threading.Thread(target=close_at_once, daemon=True).start()
    rc, out = replay(capsys, rec, "--connect", path, "--timeout", "5")
    listener.close()
    assert rc == 1
    assert "0 same" in out.splitlines()[-1] and "missing" in out
    assert "note: main channel: backend closed the connection" in out


def test_recorded_size_reads_what_describe_fd_writes() -> None:
    for n in (0, 1000, 4096, 8 << 10, 256 << 20, (256 << 20) + 1, 3 << 30):
        assert recorded_size(f"guest-memory: memfd:ram size={format_size(n)}") == n
    assert recorded_size("kick: eventfd") == 0


def test_fd_made_from_a_description_with_a_spaced_role() -> None:
    fd = make_fd("guest-memory (back-end closes it): memfd:ram size=4096", 0)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:ram")
        assert os.fstat(fd).st_size == 4096
    finally:
        os.close(fd)


def test_fds_sized_from_the_region_table() -> None:
    msgs = read_messages(str(BLK))
    second = [m for m in msgs if m.name == "ADD_MEM_REG" and not m.reply][1]
    p = second.payload
    assert region_sizes(second) == [p["memory_size"] + p["mmap_offset"]]
    assert recorded_size(second.fds[0]) == 256 << 20
    fd = make_fd("guest-memory: memfd:ram size=4096", 1 << 20)  # the table needs more
    try:
        assert os.fstat(fd).st_size == 1 << 20
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:ram")
    finally:
        os.close(fd)
    s = socket.socket(fileno=make_fd("socket:unix-stream", 0))
    assert s.family == socket.AF_UNIX
    s.close()


# -- the other shipped captures against their back-ends -------------------------------------


@pytest.fixture
def shortdir():
    path = Path(tempfile.mkdtemp(prefix="vurp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_replay_fs_against_fresh_virtiofsd(shortdir, capsys) -> None:
    """fs.pcapng (QEMU + virtiofsd, 2 queues): the same answers but for the rings' progress."""
    try:
        runners.require(runners.VIRTIOFSD)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    (shortdir / "src").mkdir()
    sock = shortdir / "fs.sock"
    with runners.virtiofsd(sock, shortdir / "src", shortdir):
        rc, out = replay(
            capsys,
            BLK.parent / "fs.pcapng",
            "--connect",
            sock,
            "--ignore",
            "GET_VRING_BASE:payload.*",
        )
    assert rc == 0, out
    assert out.strip().endswith("(equal)")


def test_replay_net_against_fresh_testpmd(shortdir, capsys) -> None:
    """net.pcapng (QEMU listened, testpmd connected): replayed to a listening testpmd.

    Nothing to ignore: the iPXE session has no guest I/O and no GET_VRING_BASE.
    """
    try:
        runners.require("dpdk-testpmd")
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))
    sock = shortdir / "net.sock"
    with runners.testpmd(sock, shortdir, client=False) as proc:
        runners.wait_for_socket(sock, 20, proc)
        rc, out = replay(capsys, BLK.parent / "net.pcapng", "--connect", sock)
    assert rc == 0, out
    assert out.strip().endswith("(equal)")


def test_unwritable_output_refused_before_connecting(tmp_path, capsys) -> None:
    sock = tmp_path / "never.sock"
    listener = wire.listen(str(sock))
    listener.settimeout(0.2)
    try:
        rc = main(["replay", str(BLK), "--connect", str(sock), "-w", str(tmp_path / "no" / "x")])
        assert rc == 1
        assert "cannot create capture" in capsys.readouterr().err
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    finally:
        listener.close()


def test_backend_that_stops_reading_cannot_hang_the_replay(tmp_path, capsys) -> None:
    """30000 recorded messages, a back-end that never reads: the send times out, we end."""
    num = build("main", 8, {"index": 0, "num": 256})
    rec = _recording(tmp_path, [_f(2 + i, "main", "f2b", num) for i in range(30000)])
    path = tmp_path / "deaf.sock"
    listener = wire.listen(str(path))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    try:
        rc, out = replay(capsys, rec, "--connect", path, "--timeout", "0.5")
    finally:
        listener.close()
        for s in held:
            s.close()
    assert rc == 1
    assert "send failed" in out


def test_memory_log_and_inflight_fds_sized_for_the_back_end(tmp_path, capsys) -> None:
    """A back-end that checks what it got: every fd large enough for its recorded table."""
    mib = 1 << 20
    regions = [
        {
            "guest_phys_addr": 0,
            "memory_size": 2 * mib,
            "userspace_addr": 0x7F0000000000,
            "mmap_offset": 0,
        },
        {
            "guest_phys_addr": 4 * mib,
            "memory_size": 3 * mib,
            "userspace_addr": 0x7F0000400000,
            "mmap_offset": mib,
        },
    ]
    rec = _recording(
        tmp_path,
        [
            _f(
                2,
                "main",
                "f2b",
                build("main", 5, {"nregions": 2, "regions": regions}, need_reply=True),
                ("memfd:ram0 size=4096", "memfd:ram1 size=4096"),
            ),
            _f(3, "main", "b2f", build("main", 5, {"result": 0}, reply=True, layout="ack")),
            _f(
                4,
                "main",
                "f2b",
                build("main", 6, {"mmap_size": 5 * mib, "mmap_offset": 0}, need_reply=True),
                ("memfd:log",),
            ),
            _f(5, "main", "b2f", build("main", 6, {"value": 0}, reply=True)),
            _f(
                6,
                "main",
                "f2b",
                build(
                    "main",
                    32,
                    {"mmap_size": 8192, "mmap_offset": 4096, "num_queues": 1, "queue_size": 128},
                ),
                ("memfd:inflight size=4096",),
            ),
        ],
    )
    path = tmp_path / "sizes.sock"
    listener = wire.listen(str(path))
    seen: list[tuple[int, list[int]]] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while (msg := wire.recv_msg(conn)) is not None:
                seen.append((msg.request, [os.fstat(fd).st_size for fd in msg.fds]))
                msg.close_fds()
                if msg.flags & wire.FLAG_NEED_REPLY or msg.request == 6:
                    wire.send_raw(conn, wire.pack(msg.request, wire.REPLY_FLAGS, wire.U64.pack(0)))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    rc, out = replay(capsys, rec, "--connect", path, "--timeout", "2")
    t.join(5)
    listener.close()
    assert seen == [(5, [2 * mib, 4 * mib]), (6, [5 * mib]), (32, [8192 + 4096])]
    assert rc == 1  # the fds now say their real sizes
    assert (
        "fds: guest-memory: memfd size=4096, guest-memory: memfd size=4096 -> "
        "guest-memory: memfd size=2MiB, guest-memory: memfd size=4MiB"
    ) in out
    assert "fds: inflight: memfd size=4096 -> inflight: memfd size=12KiB" in out


def test_oversized_header_ends_the_channel(tmp_path, capsys) -> None:
    """A reply announcing 1 GiB of payload: refused (no allocation), noted, replay over."""
    rec = _recording(
        tmp_path,
        [
            _f(2, "main", "f2b", build("main", 1)),
            _f(3, "main", "b2f", build("main", 1, {"features": 1}, reply=True)),
            _f(4, "main", "f2b", build("main", 3)),
        ],
    )
    path = tmp_path / "huge.sock"
    listener = wire.listen(str(path))

    def lie() -> None:
        conn, _ = listener.accept()
        with conn:
            wire.recv_msg(conn)
            conn.sendall(wire.HEADER.pack(1, wire.REPLY_FLAGS, 1 << 30))
            conn.recv(1)  # until the replay closes

    t = threading.Thread(target=lie, daemon=True)
    t.start()
    rc, out = replay(capsys, rec, "--connect", path, "--timeout", "2")
    t.join(5)
    listener.close()
    assert rc == 1
    assert (
        "note: main channel: backend: header announces 1073741824 payload bytes (max 4096)" in out
    )


def test_a_recorded_size_of_too_many_digits_is_no_size():
    """An fd description is the capture's text: ``size=`` and 5,000 digits must not stop
    the replay with int()'s digit-limit ValueError (it makes the smallest memfd instead)."""
    desc = "guest-memory: memfd:ram size=" + "9" * 5000
    assert recorded_size(desc) == 0
    fd = make_fd(desc, 4096)
    try:
        assert os.fstat(fd).st_size == 4096
    finally:
        os.close(fd)
