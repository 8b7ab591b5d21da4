"""Security: who may connect, what the proxy will not clobber, what it puts back, what it writes.

A debugging proxy runs next to a VM, often as root: its listen sockets and
captures must not be readable or connectable by others (captures hold guest
memory contents), it must never follow a symlink or replace a file that is not
a stale socket, ``--interpose`` must put the back-end's socket back on every
way out, and the Lua dissector must stay fast on hostile count fields.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time

import pytest

from vuinspect.capture import CaptureWriter
from vuinspect.encode import header
from vuinspect.frames import Frame, event_frame
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import proxy_options, run_proxy

from .conftest import linked_file, log_text, report, start_backend, start_proxy, stop, wait_line

pytestmark = pytest.mark.timeout(120)
LUA = os.path.join(os.path.dirname(__file__), "..", "..", "dissectors", "vhost_user.lua")


def proxy_cli(
    *argv: str, umask: int | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    """Run ``vuinspect proxy`` expecting it to exit by itself (a refusal)."""

    def pre() -> None:
        if umask is not None:
            os.umask(umask)

    return run_proxy("--no-tui", *argv, timeout=timeout, preexec_fn=pre)


def one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("vuinspect proxy: ")
    return lines[0]


# -- listen sockets -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode_args, want",
    [((), 0o600), (("--socket-mode", "0660"), 0o660), (("--socket-mode", "600"), 0o600)],
)
def test_listen_socket_mode_under_umask_0(sockdir, procs, mode_args, want) -> None:
    px = os.path.join(sockdir, "px.sock")
    be = os.path.join(sockdir, "be.sock")
    p = start_proxy(procs, px, be, *mode_args, preexec_fn=lambda: os.umask(0))
    st = os.lstat(px)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == want
    assert stop(p) == 0
    assert not os.path.exists(px)  # removed on exit


@pytest.mark.parametrize(
    "kind",
    [
        "symlink-to-file",
        "dangling-symlink",
        "symlink-to-dir",
        "regular-file",
        "directory",
        "fifo",
        "live-socket",
    ],
)
def test_listen_path_is_never_clobbered(sockdir, procs, kind) -> None:
    px = os.path.join(sockdir, "px.sock")
    target = os.path.join(sockdir, "precious")
    if kind == "symlink-to-file":
        with open(target, "w") as f:
            f.write("precious")
        os.symlink(target, px)
    elif kind == "dangling-symlink":
        os.symlink(target, px)
    elif kind == "symlink-to-dir":
        os.mkdir(target)
        os.symlink(target, px)
    elif kind == "regular-file":
        with open(px, "w") as f:
            f.write("precious")
    elif kind == "directory":
        os.mkdir(px)
    elif kind == "fifo":
        os.mkfifo(px)
    else:
        start_backend(procs, px)
    before = os.lstat(px)
    line = one_line(proxy_cli("--listen", px, "--connect", os.path.join(sockdir, "be.sock")))
    after = os.lstat(px)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_mtime_ns,
    )
    if kind == "symlink-to-file" or kind == "regular-file":
        with open(px if kind == "regular-file" else target) as f:
            assert f.read() == "precious"
    if kind == "dangling-symlink":
        assert not os.path.exists(target)  # nothing was created through it
    assert px in line


def test_unownable_paths_are_one_clear_line(sockdir) -> None:
    be = os.path.join(sockdir, "be.sock")
    line = one_line(
        proxy_cli("--listen", os.path.join(sockdir, "no", "dir", "px.sock"), "--connect", be)
    )
    assert line.endswith("No such file or directory")
    ro = os.path.join(sockdir, "ro")
    os.mkdir(ro)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,ro", "tmpfs", ro]).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        line = one_line(proxy_cli("--listen", os.path.join(ro, "px.sock"), "--connect", be))
        assert line.endswith("Read-only file system")
    finally:
        subprocess.run(["umount", "-l", ro], check=False)


def test_too_long_listen_path_is_explained(sockdir) -> None:
    px = os.path.join(sockdir, "p" * 120 + ".sock")
    line = one_line(proxy_cli("--listen", px, "--connect", os.path.join(sockdir, "be.sock")))
    assert not line.endswith("None") and "too long" in line


def test_interposing_a_path_too_long_to_move_aside(sockdir) -> None:
    """PATH.vuinspect-orig must stay connectable: refused up front, the socket left alone."""
    sub = os.path.join(sockdir, "d" * (100 - len(sockdir) - len("/be.sock")))
    os.mkdir(sub)
    be = os.path.join(sub, "be.sock")
    assert len(be) + len(".vuinspect-orig") > 107 >= len(be)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(be)
    srv.listen(1)
    try:
        ino = os.stat(be).st_ino
        line = one_line(proxy_cli("--interpose", be))
        assert "too long" in line and "--listen/--connect" in line
        assert os.stat(be).st_ino == ino and sorted(os.listdir(sub)) == ["be.sock"]
    finally:
        srv.close()


# -- interpose: the original always comes back ------------------------------------------------
def _interposed_backend(sockdir: str, procs) -> tuple[str, os.stat_result]:
    be = os.path.join(sockdir, "be.sock")
    start_backend(procs, be)
    os.chmod(be, 0o640)
    os.chown(be, 65534, 65534)  # nobody:nogroup: the proxy's socket must take these over
    return be, os.stat(be)


def _assert_restored(be: str, before: os.stat_result) -> None:
    st = os.lstat(be)
    assert st.st_ino == before.st_ino, "the back-end's own socket is not back at its path"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    assert not os.path.exists(be + ".vuinspect-orig")
    fe = Frontend(wire.connect(be))  # and it still serves, directly
    assert fe.call(wire.GET_FEATURES) is not None
    fe.close()


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "viewer"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interpose_restores_on_signal(sockdir, procs, sig, quiet) -> None:
    """Quiet: one process; viewer: the signal goes to the viewer, which passes it on."""
    be, before = _interposed_backend(sockdir, procs)
    p = procs.start(
        ["vuinspect", "proxy", "--interpose", be, "--no-tui", *(["-q"] if quiet else [])], "proxy"
    )
    wait_line(p, "listening on")
    st = os.lstat(be)
    assert st.st_ino != before.st_ino  # the proxy's socket, with the original's mode and owner
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    fe = Frontend(wire.connect(be))
    fe.handshake()
    fe.close()
    time.sleep(0.1)
    assert stop(p, sig) == 0, log_text(p)
    _assert_restored(be, before)


def test_interpose_restores_when_a_later_route_fails(sockdir, procs) -> None:
    """The exception path: the second --interpose fails after the first took over its socket."""
    be, before = _interposed_backend(sockdir, procs)
    missing = os.path.join(sockdir, "missing.sock")
    line = one_line(proxy_cli("--interpose", be, "--interpose", missing))
    assert "missing.sock" in line
    _assert_restored(be, before)


def test_interpose_restores_when_the_capture_cannot_start(sockdir, procs) -> None:
    be, before = _interposed_backend(sockdir, procs)
    one_line(proxy_cli("--interpose", be, "-w", "/dev/full"))
    _assert_restored(be, before)


def test_interpose_does_not_restore_over_a_restarted_backend(sockdir, procs) -> None:
    """SIGKILL cannot be caught: the next run must refuse clearly instead of guessing."""
    be, before = _interposed_backend(sockdir, procs)
    p = procs.start(["vuinspect", "proxy", "--interpose", be, "--no-tui", "-q"], "proxy")
    wait_line(p, "listening on")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    assert os.path.exists(be + ".vuinspect-orig")
    line = one_line(proxy_cli("--interpose", be))
    assert "already exists" in line
    os.rename(be + ".vuinspect-orig", be)  # the manual fix the message asks for
    _assert_restored(be, before)


# -- captures ---------------------------------------------------------------------------------
def test_capture_files_are_0600(sockdir, procs) -> None:
    be = os.path.join(sockdir, "be.sock")
    start_backend(procs, be)
    new = os.path.join(sockdir, "new.pcapng")
    old = os.path.join(sockdir, "old.pcapng")
    with open(old, "w") as f:
        f.write("an older, world-readable file")
    os.chmod(old, 0o644)
    for cap in (new, old):
        px = os.path.join(sockdir, "px.sock")
        p = start_proxy(procs, px, be, "-w", cap, "--force", preexec_fn=lambda: os.umask(0))
        fe = Frontend(wire.connect(px))
        fe.handshake()
        fe.close()
        assert stop(p) == 0
        assert stat.S_IMODE(os.stat(cap).st_mode) == 0o600, cap


def test_capture_never_through_a_symlink(sockdir) -> None:
    target, link = linked_file(sockdir, "cap.pcapng", "precious")
    px, be = os.path.join(sockdir, "px.sock"), os.path.join(sockdir, "be.sock")
    line = one_line(proxy_cli(*proxy_options(px, be, "-w", link, quiet=False, no_tui=False)))
    assert "symbolic link" in line
    with open(target) as f:
        assert f.read() == "precious"


# -- the Lua dissector on hostile counts ----------------------------------------------------------
def _hostile_frames(n: int) -> list[Frame]:
    """Messages whose count and size fields claim far more than the bytes present."""
    u32max = 0xFFFFFFFF
    payloads = [
        (5, struct.pack("<II", u32max, 0) + bytes(32 * 8)),  # SET_MEM_TABLE nregions
        (5, struct.pack("<II", u32max, 0)),  # ... and no regions at all
        (24, struct.pack("<III", 0, u32max, 0) + bytes(16)),  # GET_CONFIG size
        (25, struct.pack("<III", u32max, u32max, u32max)),  # SET_CONFIG
        (37, bytes(8) + struct.pack("<Q", 2**64 - 1)),  # ADD_MEM_REG, cut
        (31, struct.pack("<QQHH", 2**64 - 1, 2**64 - 1, 0xFFFF, 0xFFFF) + bytes(4)),
        (44, struct.pack("<II", u32max, 0) + bytes(64)),  # shmem-style counts
    ]
    frames: list[Frame] = [event_frame("open", 1, 1, {"label": "hostile", "byteorder": "little"})]
    ts = 2
    for i in range(n):
        req, payload = payloads[i % len(payloads)]
        data = header(req, 0x1, len(payload)) + payload
        if i % 5 == 4:  # a header claiming 4 GiB, with the bytes of a few messages after it
            data = header(req, 0x1, u32max) + payload * 3
        if i % 50 == 49:  # a thousand empty messages in one packet: bounded by bytes, not counts
            data = header(3, 0x1, 0) * 1000
        frames.append(Frame(ts, 1, "main", "f2b", data, ("eventfd",) * (i % 3)))
        # the same hostile payload as the reply, which also keeps nothing waiting (unanswered
        # requests are test_unanswered_requests_*)
        frames.append(Frame(ts + 1, 1, "main", "b2f", header(req, 0x5, len(payload)) + payload))
        ts += 2
    # the back-end channel's SHMEM_CONFIG-like counts too
    frames.append(Frame(ts, 1, "backend", "b2f", header(6, 0x9, 8) + struct.pack("<II", u32max, 0)))
    return frames


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.skipif(not os.path.exists(LUA), reason="dissectors/vhost_user.lua not generated yet")
def test_lua_dissector_bounded_on_huge_counts(sockdir) -> None:
    n = 700
    cap = os.path.join(sockdir, "hostile.pcapng")
    with CaptureWriter(cap) as w:
        for f in _hostile_frames(n):
            w.write(f)
    t0 = time.monotonic()
    res = subprocess.run(
        ["tshark", "-r", cap, "-X", f"lua_script:{LUA}", "-V"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    hostile_s = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "Lua Error" not in out, [ln for ln in out.splitlines() if "Lua Error" in ln][:5]
    assert "nregions = 4294967295, at most 8 allowed" in out  # the counts were seen, and capped
    assert "size = 4294967295 but only 16 bytes follow" in out
    assert res.stdout.count("\nFrame ") + res.stdout.startswith("Frame ") == 2 * n + 2
    # bounded: within a small factor of the time for the same number of ordinary packets
    from vuinspect.samples import device_start

    plain = os.path.join(sockdir, "plain.pcapng")
    base = device_start()
    with CaptureWriter(plain) as w:
        for i in range(2 * n + 2):
            f = base[1 + i % (len(base) - 2)]
            w.write(Frame(i + 1, f.conn, f.channel, f.direction, f.data, f.fds, f.kind))
    t0 = time.monotonic()
    subprocess.run(
        ["tshark", "-r", plain, "-X", f"lua_script:{LUA}", "-V"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    plain_s = time.monotonic() - t0
    # the thousand-message packets hold most of the messages: allow for them, not for counts
    assert hostile_s < max(20.0, 20 * plain_s), (hostile_s, plain_s)
    report(
        "lua_hostile_counts",
        packets=2 * n + 2,
        seconds=round(hostile_s, 2),
        ordinary_packets_seconds=round(plain_s, 2),
    )


def test_socket_mode_refuses_nonsense() -> None:
    for bad in ("rw", "1777", "-1", "9"):
        res = run_proxy("--listen", "/tmp/x", "--connect", "/tmp/y", "--socket-mode", bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (bad, res.stderr)
        assert "--socket-mode" in res.stderr


def test_connect_side_socket_is_not_left_open_to_others(sockdir, procs) -> None:
    """The proxy's socket (not the back-end's) is the one peers reach: no other listening
    sockets appear in the proxy process beyond its listen paths."""
    be = os.path.join(sockdir, "be.sock")
    px = os.path.join(sockdir, "px.sock")
    start_backend(procs, be)
    p = start_proxy(procs, px, be)
    fe = Frontend(wire.connect(px))
    fe.handshake(backend_channel=True)
    inodes = set()
    for fd in os.listdir(f"/proc/{p.pid}/fd"):
        target = os.readlink(f"/proc/{p.pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[6] in inodes and int(parts[3], 16) & 0x10000:
                listening.append(parts[7] if len(parts) > 7 else "(unnamed)")
    fe.close()
    assert stop(p) == 0
    assert listening == [px]
    sock = socket.socket(socket.AF_UNIX)
    assert sock.connect_ex(px) != 0  # gone after exit
    sock.close()


# -- unanswered requests: cost must not grow with the square of the backlog ---------------------------
# (was quadratic: every new request got one problem per request still waiting; fixed by
# reporting one request_while_waiting naming the oldest and the count.)


@pytest.mark.timeout(60)
def test_unanswered_requests_cost_linear_problems() -> None:
    from vuinspect.fuzz.check import run_pipeline

    n = 1000
    msgs = run_pipeline([Frame(1, 1, "main", "f2b", header(1, 0x1, 0) * n)])
    problems = sum(len(m.problems) for m in msgs)
    assert problems <= 3 * n, f"{n} unanswered GET_FEATURES gave {problems} problems"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.skipif(not os.path.exists(LUA), reason="dissectors/vhost_user.lua not generated yet")
def test_unanswered_requests_dissect_in_linear_time(sockdir) -> None:
    times = {}
    for req in (3, 1):  # SET_OWNER expects no reply; GET_FEATURES always does
        cap = os.path.join(sockdir, f"backlog{req}.pcapng")
        with CaptureWriter(cap) as w:
            w.write(event_frame("open", 1, 1, {"label": "backlog", "byteorder": "little"}))
            w.write(Frame(2, 1, "main", "f2b", header(req, 0x1, 0) * 2500))
        t0 = time.monotonic()
        res = subprocess.run(
            ["tshark", "-r", cap, "-X", f"lua_script:{LUA}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        times[req] = time.monotonic() - t0
        assert res.returncode == 0 and "Lua Error" not in res.stdout + res.stderr
    assert times[1] < 3 * times[3] + 1.0, times
