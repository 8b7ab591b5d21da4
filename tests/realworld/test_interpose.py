"""`vuinspect proxy --interpose` on a live qemu-storage-daemon socket."""

from __future__ import annotations

import os
import signal

import pytest

from vuinspect.demo import runners, scenarios

from .captures import load

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]


def test_interpose_then_sigterm_restores_socket(guest, workdir):
    image = workdir / "disk.img"
    image.write_bytes(b"")
    os.truncate(image, 8 << 20)
    sock, cap_path = workdir / "qsd.sock", workdir / "ip.pcapng"

    with runners.storage_daemon(image, sock, workdir):
        before = os.stat(sock)
        entries = sorted(os.listdir(workdir))
        with runners.proxy(None, None, cap_path, workdir, extra=["--interpose", str(sock)]) as px:
            assert os.stat(sock).st_ino != before.st_ino  # the path is now the proxy's socket
            ok, verdict = scenarios.guest_run(
                runners.blk_device(sock), workdir, guest, "blk", seed="interposed", size_kib=256,
                name="qemu-interposed",
            )  # fmt: skip
            assert ok, verdict
            px.send_signal(signal.SIGTERM)
            assert px.wait_exit(15) == 0

        after = os.stat(sock)
        assert (after.st_ino, after.st_mode, after.st_uid, after.st_gid) == (
            before.st_ino, before.st_mode, before.st_uid, before.st_gid,
        )  # fmt: skip
        assert sorted(os.listdir(workdir)) == sorted(
            entries + ["proxy.log", "qemu-interposed.log", "ip.pcapng"]
        )
        # The original path reaches qemu-storage-daemon directly again.
        ok, verdict = scenarios.guest_run(
            runners.blk_device(sock),
            workdir,
            guest,
            "blk",
            seed="after",
            size_kib=256,
            name="qemu-direct",
        )
        assert ok, verdict

    cap = load(cap_path)
    assert cap.names()[:1] == ["GET_FEATURES"]
    assert {"SET_MEM_TABLE", "ADD_MEM_REG"} & set(cap.names())
