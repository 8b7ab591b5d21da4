"""QEMU + virtiofsd (vhost-user-fs) through the proxy."""

from __future__ import annotations

import pytest

from vuinspect.demo import scenarios
from vuinspect.demo.guest import pattern

from .captures import load, unanswered

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]


def test_fs_through_proxy(guest, workdir):
    cap_path = workdir / "fs.pcapng"
    out = scenarios.run_fs(
        workdir, guest, via=scenarios.ProxySpec(cap_path), seed="fstest", size_kib=128
    )
    assert out.ok, out.verdict
    # run_fs already compared it; check here too so the test states what it proves
    assert (workdir / "share" / "vutest.txt").read_bytes() == pattern("fstest", 128)

    cap = load(cap_path)
    assert [info["orientation"] for _, info in cap.opens()] == ["frontend-connects"]
    names = cap.names()
    assert {"SET_MEM_TABLE", "ADD_MEM_REG"} & set(names) and "SET_VRING_KICK" in names, names
    assert unanswered(cap) == []
