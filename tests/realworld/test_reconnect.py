"""Kill and restart qemu-storage-daemon while QEMU (reconnect=1) stays up, through the proxy."""

from __future__ import annotations

import functools
import os
import signal
import time

import pytest

from vuinspect.demo import runners
from vuinspect.testing import procs

from .captures import load

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

# QEMU without a kernel: SeaBIOS boots from the vhost-user-blk disk, which starts the
# device (memory table, rings); on an empty disk it then waits and retries, so QEMU
# stays up as long as we like.
STARTED = r"\bSET_VRING_KICK\b"


wait_until = functools.partial(procs.wait_until, interval=0.1)  # (predicates read QEMU's logs)


def settled_fd_count(pid: int) -> int:
    """The proxy's fd count once it stops moving (fds in flight come and go)."""
    last = runners.fd_count(pid)
    for _ in range(50):
        time.sleep(0.3)
        now = runners.fd_count(pid)
        if now == last:
            return now
        last = now
    raise AssertionError("the proxy's fd count never settled")


def test_backend_restart_gives_new_session(workdir):
    image = workdir / "disk.img"
    image.write_bytes(b"")
    os.truncate(image, 8 << 20)
    qsd_sock, vu_sock, cap_path = workdir / "qsd.sock", workdir / "vu.sock", workdir / "re.pcapng"

    with (
        runners.storage_daemon(image, qsd_sock, workdir, name="qsd1") as qsd1,
        runners.proxy(vu_sock, qsd_sock, cap_path, workdir) as px,
    ):
        idle = runners.fd_count(px.pid)
        with runners.qemu(runners.blk_device(vu_sock, reconnect=True), workdir) as qemu:
            px.wait_for(STARTED, 60)
            one_session = settled_fd_count(px.pid)
            assert one_session > idle
            kicks = px.count(STARTED)

            qsd1.stop(signal.SIGKILL)  # the back-end dies
            qsd_sock.unlink(missing_ok=True)  # a killed qsd leaves its socket file
            with runners.storage_daemon(image, qsd_sock, workdir, name="qsd2"):
                # QEMU reconnects every second; the device starts again on the new session
                wait_until(lambda: px.count(STARTED) > kicks, 20, "the device to start again")
                assert qemu.alive()
                wait_until(
                    lambda: runners.fd_count(px.pid) == one_session,
                    10,
                    f"the proxy's fd count to return to {one_session} with one live session",
                )
        # QEMU is gone: every session closed, the proxy is back to its idle fds
        wait_until(lambda: runners.fd_count(px.pid) == idle, 10, f"fd count back to {idle}")

    cap = load(cap_path)
    conns = [c for c in cap.conns_with_traffic() if "SET_VRING_KICK" in cap.names(c)]
    assert len(conns) >= 2, f"sessions that started the device: {conns}"
    assert conns[0] != conns[-1]
    assert cap.names(conns[-1])[0] == "GET_FEATURES"
