"""QEMU as server + dpdk-testpmd as client (net_vhost): the proxy changes nothing."""

from __future__ import annotations

import pytest

from vuinspect.demo import scenarios
from vuinspect.protocol.requests import by_name

from .captures import load

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]


def canonical(dpdk_names: list[str]) -> list[str]:
    """testpmd logs VHOST_USER_SET_SLAVE_REQ_FD etc.; map to our current names."""
    out = []
    for name in dpdk_names:
        spec = by_name(name)
        out.append(spec.name if spec else name)
    return out


def test_net_proxied_equals_direct(workdir):
    runs = {}
    for label in ("direct", "proxied1", "proxied2"):
        d = workdir / label
        d.mkdir()
        via = None if label == "direct" else scenarios.ProxySpec(d / "net.pcapng")
        out = scenarios.run_net(d, via=via)
        assert out.ok, f"{label}: {out.verdict}"
        runs[label] = out

    # What the back-end itself logged, up to DRIVER_OK, is the same with and without the proxy.
    direct = runs["direct"].messages
    assert len(direct) > 20 and "VHOST_USER_SET_MEM_TABLE" in direct
    assert runs["proxied1"].messages == direct
    assert runs["proxied2"].messages == direct

    seqs = []
    for label in ("proxied1", "proxied2"):
        cap = load(workdir / label / "net.pcapng")
        # testpmd connected to the proxy, QEMU spoke first: the proxy must have noticed.
        assert [info["orientation"] for _, info in cap.opens()] == ["backend-connects"]
        names = cap.names()
        seqs.append(names[: len(direct)])
        # The capture holds exactly what the back-end says it received, in order.
        assert names[: len(direct)] == canonical(direct)
    assert seqs[0] == seqs[1]
