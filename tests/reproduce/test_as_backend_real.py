"""``replay --as-backend`` against real front-ends: QEMU TCG and DPDK virtio-user.

QEMU (blk.pcapng, recorded with qemu-storage-daemon): there is no data plane,
so the first disk read of the guest's firmware (SeaBIOS, right after the first
SET_VRING_ENABLE) is never completed and the guest waits there for ever.  The
test states that step: every recorded message up to frame 31 (SET_VRING_ENABLE
vring 0 enable) is matched and answered; frames 32-45 (the firmware's stop and
the Linux driver's session) never come.  QEMU is killed afterwards.

DPDK virtio-user: captures/net.pcapng has QEMU as the front-end, so the test
first records virtio-user -> testpmd net_vhost through ``vuinspect proxy``,
then replays that back-end to a new virtio-user: its link comes up and its
whole session (up to DRIVER_OK and the stop on quit) is as recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuinspect.demo import runners
from vuinspect.demo.guest import build_guest
from vuinspect.reproduce.load import read_messages

from .test_as_backend import BLK, as_backend

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(90)]

#: Host virtual addresses: chosen anew by each QEMU process (ASLR), not the back-end's business.
ADDRESSES = ["payload.userspace_addr", "SET_VRING_ADDR:payload.*"]


def _require(*programs: str) -> None:
    try:
        for p in programs:
            runners.require(p)
    except runners.MissingProgram as exc:
        pytest.skip(str(exc))


@pytest.fixture
def shortdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vuab-", dir="/tmp"))  # socket paths < 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_qemu_boots_against_replayed_storage_daemon(shortdir) -> None:
    _require("qemu-system-x86_64")
    guest = build_guest()
    sock = shortdir / "be.sock"
    session = shortdir / "session.pcapng"
    ignores = [a for i in ADDRESSES for a in ("--ignore", i)]
    with (
        as_backend(BLK, sock, "--timeout", "5", "-w", session, *ignores) as got,
        runners.qemu(
            runners.blk_device(sock),
            shortdir,
            kernel=guest.kernel,
            initrd=guest.initrd,
            append="console=ttyS0 panic=-1",
        ) as qemu,
    ):
        # the session ends after 5 s of silence; QEMU is stopped only then (on SIGTERM it
        # would stop the device itself, which is not what the recording did at that point)
        got["proc"].wait(45)
    report = got["report"]
    assert report is not None, got["err"]
    entries = report["entries"]
    reached = [e for e in entries if e["status"] == "same"]
    assert {e["a_frame"] for e in reached} == set(range(2, 32)) - {32}  # frames 2-31, all
    assert reached[-1]["name"] == "SET_VRING_ENABLE" and reached[-1]["a_frame"] == 31
    missing = [e["a_frame"] for e in entries if e["status"] == "missing"]
    assert missing == list(range(32, 46))  # the firmware's stop and the Linux driver's session
    assert report["counts"] == {"same": 30, "different": 0, "missing": 14, "unexpected": 0}
    assert report["notes"] == [
        "no message from the front-end for 5 s; the recording's next was frame 32 SET_VRING_ENABLE"
    ]
    assert got["rc"] == 1
    assert qemu.count(r"Linux version") == 0  # the guest never left its firmware

    # QEMU got the recorded answers: its ADD_MEM_REG acks and the config space of the disk.
    replayed = read_messages(str(session))
    config = [m for m in replayed if m.name == "GET_CONFIG" and m.reply]
    recorded = [m for m in read_messages(str(BLK)) if m.name == "GET_CONFIG" and m.reply]
    assert [m.raw for m in config] == [m.raw for m in recorded]


def test_qemu_server_reaches_driver_ok_against_replayed_testpmd(shortdir) -> None:
    """captures/net.pcapng (QEMU server=on, testpmd connected): vuinspect connects instead of
    testpmd; the NIC's iPXE ROM drives the device to DRIVER_OK, every message as recorded."""
    _require("qemu-system-x86_64")
    sock = shortdir / "qemu.sock"
    with runners.qemu(runners.net_server_device(sock), shortdir) as qemu:
        runners.wait_for_socket(sock, 20, qemu)
        with as_backend(
            BLK.parent / "net.pcapng",
            sock,
            "--timeout",
            "10",
            "--ignore",
            "*userspace_addr",
            "--ignore",
            "SET_VRING_ADDR:payload.*",
            connect=True,
        ) as got:
            got["proc"].wait(45)
    report = got["report"]
    assert got["rc"] == 0, (report, got["err"])
    assert report["counts"] == {"same": 45, "different": 0, "missing": 0, "unexpected": 0}
    last = report["entries"][-1]
    assert (last["name"], last["a_frame"]) == ("SET_STATUS", 46)  # DRIVER_OK


# -- DPDK virtio-user --------------------------------------------------------------------------

TESTPMD = ("--no-huge", "-m", "512", "--no-pci", "-l", "0-1", "--log-level=lib.eal:error")


@contextlib.contextmanager
def virtio_user(sock: Path, log_dir: Path, name: str) -> Iterator[runners.Proc]:
    """An interactive dpdk-testpmd whose only port is virtio-user on ``sock`` (the front-end)."""
    prefix = f"vuab{os.getpid()}-{name}"
    argv = [
        runners.require("dpdk-testpmd"),
        *TESTPMD,
        f"--file-prefix={prefix}",
        "--vdev",
        f"net_virtio_user0,path={sock},queues=1",
        "--",
        "-i",
        "--total-num-mbufs=8192",
    ]
    try:
        with runners.running(name, argv, log_dir, stdin=subprocess.PIPE) as proc:
            yield proc
    finally:
        shutil.rmtree(Path("/var/run/dpdk") / prefix, ignore_errors=True)


def link_up_then_quit(proc: runners.Proc) -> None:
    """Ask for the port's link, then quit (virtio-user stops the device: the session ends).

    testpmd's output is a pipe, so block-buffered: it is read once testpmd has exited."""
    assert proc.popen.stdin is not None
    proc.wait_for(r"Checking link statuses", 20)  # the port started
    proc.popen.stdin.write(b"show port info 0\nquit\n")
    proc.popen.stdin.flush()
    assert proc.wait_exit(20) == 0, proc.tail()
    assert proc.count(r"Link status: up") == 1, proc.tail(40)


def test_virtio_user_link_up_against_replayed_testpmd(shortdir) -> None:
    _require("dpdk-testpmd")
    # 1. Record virtio-user -> vuinspect proxy -> testpmd net_vhost.
    backend_sock, proxy_sock, cap = (
        shortdir / "be.sock",
        shortdir / "p.sock",
        shortdir / "vu.pcapng",
    )
    with runners.testpmd(backend_sock, shortdir, client=False) as backend:
        runners.wait_for_socket(backend_sock, 20, backend)
        with (
            runners.proxy(proxy_sock, backend_sock, cap, shortdir, extra=["--device", "net"]),
            virtio_user(proxy_sock, shortdir, "frontend1") as fe,
        ):
            link_up_then_quit(fe)
    recorded = read_messages(str(cap))
    names = [m.name for m in recorded if m.kind == "message" and not m.reply]
    assert names[0] == "SET_OWNER" and "SET_MEM_TABLE" in names  # virtio-user's order, not QEMU's
    assert any(m.name == "SET_STATUS" and m.payload.get("status", 0) & 4 for m in recorded)

    # 2. The same front-end against the replayed back-end: link up, the session as recorded.
    sock = shortdir / "replay.sock"
    with (
        as_backend(cap, sock, "--timeout", "5") as got,
        virtio_user(sock, shortdir, "frontend2") as fe,
    ):
        link_up_then_quit(fe)
    assert got["rc"] == 0, (got["report"], got["err"])
    counts = got["report"]["counts"]
    assert counts["same"] == len([m for m in recorded if m.kind == "message"]) > 20
