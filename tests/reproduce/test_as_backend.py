"""``vuinspect replay --listen SOCK --as-backend``: the recorded back-end side for a live front-end.

In-repo peers first (the replay's own front-end role, vuinspect.testing.frontend,
raw sockets for hostile front-ends); the real front-ends (QEMU TCG, DPDK
virtio-user) are in test_as_backend_real.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.cli import main
from vuinspect.encode import build
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend

from .recording import frame, recording

pytestmark = pytest.mark.timeout(60)

BLK = Path(__file__).resolve().parents[2] / "captures" / "blk.pcapng"


@contextlib.contextmanager
def as_backend(capture: Path, sock: Path, *args: object, connect: bool = False) -> Iterator[dict]:
    """``vuinspect replay CAPTURE --listen SOCK --as-backend --json`` (``--connect`` with
    ``connect``) as a process; rc, report and stderr fill the yielded dict when the block ends."""
    argv = [
        sys.executable,
        "-m",
        "vuinspect",
        "replay",
        str(capture),
        "--connect" if connect else "--listen",
        str(sock),
        "--as-backend",
        "--json",
        *map(str, args),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: dict = {"proc": proc}
    try:
        deadline = time.monotonic() + 20
        while (
            not connect
            and not sock.exists()
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        yield result
    finally:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        result.update(rc=proc.returncode, err=err, report=json.loads(out) if out.strip() else None)


def _connect(sock: Path) -> socket.socket:
    return wire.connect(str(sock), retries=200)


def test_front_end_replay_against_back_end_replay(tmp_path, capsys) -> None:
    """Both roles from one capture: each sees the other behave exactly as recorded."""
    sock = tmp_path / "be.sock"
    session = tmp_path / "session.pcapng"
    with as_backend(BLK, sock, "--timeout", "3", "-w", session) as got:
        rc = main(["replay", str(BLK), "--connect", str(sock), "--timeout", "3"])
        front = capsys.readouterr().out
    assert rc == 0, front
    assert got["rc"] == 0, (got["report"], got["err"])
    assert got["report"]["counts"] == {"same": 44, "different": 0, "missing": 0, "unexpected": 0}
    assert main(["diff", str(BLK), str(session)]) == 0  # -w wrote the session as a capture


def _features_recording(tmp_path: Path) -> Path:
    return recording(
        tmp_path,
        [
            frame(2, "main", "f2b", build("main", 1)),
            frame(3, "main", "b2f", build("main", 1, {"features": 0x1234}, reply=True)),
            frame(4, "main", "f2b", build("main", 3)),
            frame(5, "main", "f2b", build("main", 15)),
            frame(6, "main", "b2f", build("main", 15, {"features": 0x8000}, reply=True)),
        ],
    )


def test_divergence_reported_and_answered_conservatively(tmp_path) -> None:
    """Extra requests get a reply the front-end can live with, and each is reported."""
    rec = _features_recording(tmp_path)
    sock = tmp_path / "be.sock"
    with as_backend(rec, sock, "--timeout", "2") as got:
        fe = Frontend(_connect(sock))
        assert fe.call(wire.GET_FEATURES).u64 == 0x1234  # the recorded reply
        queues = fe.call(wire.GET_QUEUE_NUM)  # never recorded: an empty (failing) reply
        assert (queues.request, queues.flags, queues.payload) == (wire.GET_QUEUE_NUM, 5, b"")
        assert fe.call(wire.GET_FEATURES).u64 == 0x1234  # extra: the recorded one again
        fe.call(wire.SET_OWNER)
        refused = fe.call(wire.SET_VRING_NUM, struct.pack("=II", 0, 256), need_reply=True)
        assert refused.u64 == 1  # an extra REPLY_ACK request is refused
        assert fe.call(wire.GET_PROTOCOL_FEATURES).u64 == 0x8000
        fe.close()
    report = got["report"]
    assert got["rc"] == 1
    unexpected = [(e["name"], e["reply"]) for e in report["entries"] if e["status"] == "unexpected"]
    assert unexpected == [
        ("GET_QUEUE_NUM", False),
        ("GET_QUEUE_NUM", True),
        ("GET_FEATURES", False),
        ("GET_FEATURES", True),
        ("SET_VRING_NUM", False),
        ("SET_VRING_NUM", True),
    ]
    assert report["counts"]["same"] == 5
    assert report["notes"] == [
        "front-end request #2 GET_QUEUE_NUM: not in the recording; answered with an empty "
        "reply (a failure the front-end can see)",
        "front-end request #3 GET_FEATURES: not in the recording; answered with the reply "
        "recorded at frame 3",
        "front-end request #5 SET_VRING_NUM: not in the recording; acked with failure (1)",
    ]


def test_backend_channel_requests_sent_where_they_were_recorded(tmp_path) -> None:
    """A recorded CONFIG_CHANGE_MSG follows SET_OWNER: it comes after SET_OWNER, not before."""
    rec = recording(
        tmp_path,
        [
            frame(2, "main", "f2b", build("main", 21, need_reply=True), ("socket:unix-stream",)),
            frame(3, "main", "b2f", build("main", 21, {"result": 0}, reply=True, layout="ack")),
            frame(4, "main", "f2b", build("main", 3)),
            frame(5, "backend", "b2f", build("backend", 2, need_reply=True)),
            frame(
                6, "backend", "f2b", build("backend", 2, {"result": 0}, reply=True, layout="ack")
            ),
            frame(7, "main", "f2b", build("main", 1)),
            frame(8, "main", "b2f", build("main", 1, {"features": 1}, reply=True)),
        ],
    )
    sock = tmp_path / "be.sock"
    with as_backend(rec, sock, "--timeout", "2") as got:
        fe = Frontend(_connect(sock))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fe.call(wire.SET_BACKEND_REQ_FD, fds=[theirs.fileno()], need_reply=True)
        theirs.close()
        ours.settimeout(0.3)
        with pytest.raises(TimeoutError):
            ours.recv(1, socket.MSG_PEEK)  # not yet: it followed SET_OWNER
        ours.settimeout(5)
        fe.call(wire.SET_OWNER)
        request = wire.recv_msg(ours)
        wire.send_raw(ours, wire.pack(request.request, wire.REPLY_FLAGS, wire.U64.pack(0)))
        fe.call(wire.GET_FEATURES)
        fe.close()
        ours.close()
    assert (request.request, request.flags) == (2, 0x9)
    assert got["rc"] == 0, [e for e in got["report"]["entries"] if e["status"] != "same"]
    channel = [
        (e["name"], e["reply"], e["status"])
        for e in got["report"]["entries"]
        if e["channel"] == "backend"
    ]
    assert channel == [
        ("BACKEND_CONFIG_CHANGE_MSG", False, "same"),
        ("BACKEND_CONFIG_CHANGE_MSG", True, "same"),
    ]


def test_recorded_ack_not_sent_when_not_asked_for(tmp_path) -> None:
    """Recorded with NEED_REPLY, sent without: an ack now would answer the next request."""
    rec = recording(
        tmp_path,
        [
            frame(2, "main", "f2b", build("main", 2, {"features": 1}, need_reply=True)),
            frame(3, "main", "b2f", build("main", 2, {"result": 0}, reply=True, layout="ack")),
            frame(4, "main", "f2b", build("main", 1)),
            frame(5, "main", "b2f", build("main", 1, {"features": 0x99}, reply=True)),
            frame(6, "main", "f2b", build("main", 3)),
        ],
    )
    sock = tmp_path / "be.sock"
    with as_backend(rec, sock, "--timeout", "2") as got:
        fe = Frontend(_connect(sock))
        fe.call(wire.SET_FEATURES, wire.U64.pack(1))
        features = fe.call(wire.GET_FEATURES)
        assert (features.request, features.u64) == (wire.GET_FEATURES, 0x99)
        fe.close()  # before the recorded SET_OWNER
    report = got["report"]
    assert got["rc"] == 1
    assert [(e["name"], e["reply"], e["status"]) for e in report["entries"]] == [
        ("SET_FEATURES", False, "different"),
        ("SET_FEATURES", True, "missing"),
        ("GET_FEATURES", False, "same"),
        ("GET_FEATURES", True, "same"),
        ("SET_OWNER", False, "missing"),
    ]
    assert report["notes"] == [
        "front-end request #1 SET_FEATURES: sent without NEED_REPLY; the reply recorded at "
        "frame 3 not sent",
        "the front-end closed the connection; the recording's next was frame 6 SET_OWNER",
    ]


def test_connects_to_a_listening_front_end(tmp_path) -> None:
    """--connect with --as-backend: the front-end listens (QEMU server=on), we connect."""
    sock = tmp_path / "fe.sock"
    listener = wire.listen(str(sock))
    listener.settimeout(10)
    with as_backend(_features_recording(tmp_path), sock, "--timeout", "2", connect=True) as got:
        conn, _ = listener.accept()
        listener.close()
        fe = Frontend(conn)
        assert fe.call(wire.GET_FEATURES).u64 == 0x1234
        fe.call(wire.SET_OWNER)
        assert fe.call(wire.GET_PROTOCOL_FEATURES).u64 == 0x8000
        fe.close()
    assert got["rc"] == 0, got["report"]
    assert got["report"]["counts"]["same"] == 5


def test_no_listening_front_end(tmp_path) -> None:
    with as_backend(
        _features_recording(tmp_path),
        tmp_path / "none.sock",
        "--accept-timeout",
        "0.3",
        connect=True,
    ) as got:
        pass
    assert got["rc"] == 1 and got["report"] is None
    assert "none.sock within 0.3 s" in got["err"]


# -- bounded: silence, half a message, a liar, nobody, a front-end that stops reading ----------


def test_silent_front_end_ends_the_session(tmp_path) -> None:
    sock = tmp_path / "be.sock"
    t0 = time.monotonic()
    with as_backend(_features_recording(tmp_path), sock, "--timeout", "0.5") as got:
        s = _connect(sock)
        s.sendall(wire.pack(wire.GET_FEATURES)[:6])  # half a header, then nothing
        s.recv(1)  # until the replay gives up and closes
        s.close()
    assert time.monotonic() - t0 < 10
    assert got["rc"] == 1
    assert got["report"]["notes"] == [
        "no message from the front-end for 0.5 s; the recording's next was frame 2 GET_FEATURES"
    ]
    assert got["report"]["counts"]["missing"] == 5  # 3 requests, 2 replies


def test_oversized_header_refused(tmp_path) -> None:
    sock = tmp_path / "be.sock"
    with as_backend(_features_recording(tmp_path), sock, "--timeout", "2") as got:
        s = _connect(sock)
        s.sendall(wire.HEADER.pack(1, 1, 1 << 30))
        s.recv(1)
        s.close()
    assert got["rc"] == 1
    assert got["report"]["notes"] == [
        "main channel: frontend: header announces 1073741824 payload bytes (max 4096)"
    ]


def test_endless_front_end_stopped_at_the_budget(tmp_path) -> None:
    """Messages beyond the recording are kept up to a bound, then the session ends."""
    sock = tmp_path / "be.sock"
    with as_backend(_features_recording(tmp_path), sock, "--timeout", "2") as got:
        s = _connect(sock)
        s.settimeout(10)
        with contextlib.suppress(OSError):
            s.sendall(wire.pack(wire.SET_OWNER) * 1500)  # no reply due: nothing to read
        with contextlib.suppress(ConnectionResetError):  # our unread messages: a reset
            assert s.recv(1) == b""  # closed by the replay
        s.close()
    assert got["rc"] == 1
    assert got["report"]["notes"] == ["main channel: more than 1000 messages beyond the recording"]
    # 6 recorded frames + 1000 kept; the first SET_OWNER matched the recorded one
    assert got["report"]["counts"]["unexpected"] == 6 + 1000 - 1


def test_nobody_connects(tmp_path) -> None:
    sock = tmp_path / "be.sock"
    with as_backend(_features_recording(tmp_path), sock, "--accept-timeout", "0.3") as got:
        pass
    assert got["rc"] == 1 and got["report"] is None
    assert f"no front-end connected to {sock} within 0.3 s" in got["err"]
    assert not sock.exists()


def test_front_end_that_stops_reading_cannot_hang_it(tmp_path) -> None:
    """1200 GET_CONFIG, each answered with a 3 KB recorded reply, none read: the send times out."""
    request = struct.pack("=III", 0, 3000, 0)
    rec = recording(
        tmp_path,
        [
            frame(2, "main", "f2b", wire.pack(24, 1, request + bytes(3000))),
            frame(
                3, "main", "b2f", wire.pack(24, 5, request + bytes(range(256)) * 11 + bytes(184))
            ),
        ],
    )
    sock = tmp_path / "be.sock"
    t0 = time.monotonic()
    with as_backend(rec, sock, "--timeout", "0.5") as got:
        s = _connect(sock)
        s.settimeout(10)

        def flood() -> None:
            with contextlib.suppress(OSError):
                for _ in range(1200):
                    s.sendall(wire.pack(24, 1, request + bytes(3000)))

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        t.join(20)
    s.close()
    assert time.monotonic() - t0 < 25
    assert got["rc"] == 1
    assert any(
        n.startswith("main channel: cannot send GET_CONFIG (") for n in got["report"]["notes"]
    )


def test_listen_and_connect_are_exclusive(tmp_path, capsys) -> None:
    rc = main(["replay", str(BLK), "--listen", str(tmp_path / "x.sock")])
    assert rc == 1
    assert "give either --connect SOCK or --listen SOCK --as-backend" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.sock")
