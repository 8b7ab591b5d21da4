"""QEMU + qemu-storage-daemon (vhost-user-blk), directly and through the proxy."""

from __future__ import annotations

import pytest

from vuinspect.demo import scenarios

from .captures import load, unanswered

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

# QEMU 7.2 maps guest memory with ADD_MEM_REG once CONFIGURE_MEM_SLOTS is negotiated
# (qemu-storage-daemon offers it), SET_MEM_TABLE otherwise.
MEMORY = {"SET_MEM_TABLE", "ADD_MEM_REG"}
LIFECYCLE = [{"GET_FEATURES"}, {"SET_OWNER"}, MEMORY, {"SET_VRING_KICK"}, {"GET_VRING_BASE"}]


def in_order(names: list[str], wanted: list[set[str]]) -> bool:
    it = iter(names)
    return all(any(n in w for n in it) for w in wanted)


def test_blk_direct(guest, workdir):
    """The guest alone: if this fails, the proxied runs cannot pass either."""
    out = scenarios.run_blk(workdir, guest, seed="direct", size_kib=256)
    assert out.ok, out.verdict
    assert "VUTEST-BLK-OK" in out.verdict


def test_blk_through_proxy(guest, workdir):
    cap_path = workdir / "blk.pcapng"
    out = scenarios.run_blk(workdir, guest, via=scenarios.ProxySpec(cap_path), seed="proxied")
    assert out.ok, out.verdict  # the guest read back what it wrote, and the host saw it on disk

    cap = load(cap_path)
    opens = cap.opens()
    assert len(opens) == 1, opens
    assert opens[0][1]["orientation"] == "frontend-connects"
    assert len(cap.closes()) == 1

    names = cap.names()
    assert in_order(names, LIFECYCLE), names

    # Guest RAM arrives as memfds (one per region), kick/call as eventfds.
    regions = [m for m in cap.requests() if m.name in MEMORY]
    assert regions
    for m in regions:
        expected = len(m.payload["regions"]) if m.name == "SET_MEM_TABLE" else 1
        assert len(m.fds) == expected, (m.name, m.fds, m.payload)
        assert all("memfd:" in d for d in m.fds), m.fds
    for name in ("SET_VRING_KICK", "SET_VRING_CALL"):
        with_fds = [m for m in cap.requests() if m.name == name and m.fds]
        assert with_fds, f"no {name} carried an fd"
        assert all(len(m.fds) == 1 and m.fds[0].endswith("eventfd") for m in with_fds), [
            m.fds for m in with_fds
        ]

    assert unanswered(cap) == []
    replies = [m for m in cap.messages if m.kind == "message" and m.reply]
    assert replies and all(m.reply_to is not None for m in replies)
