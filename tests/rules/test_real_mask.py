"""A real guest through the proxy with ``mask-features VIRTIO_RING_F_EVENT_IDX``:
QEMU TCG + qemu-storage-daemon (vhost-user-blk); the guest's disk I/O still checks."""

from __future__ import annotations

import pytest

from tests.realworld.captures import load, unanswered
from vuinspect.demo import scenarios
from vuinspect.frames import event_info

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180)]

EVENT_IDX = 1 << 29


def test_mask_event_idx_guest_runs(guest, workdir):
    cap_path = workdir / "masked.pcapng"
    rule = "mask-features VIRTIO_RING_F_EVENT_IDX"
    out = scenarios.run_blk(
        workdir,
        guest,
        seed="masked",
        size_kib=256,
        via=scenarios.ProxySpec(cap_path, extra=["--rule", rule]),
    )
    assert out.ok, out.verdict  # the guest wrote and read back its pattern; the host checked it

    cap = load(cap_path)
    msgs = [m for m in cap.messages if m.kind == "message" and m.channel == "main"]
    offers = [m for m in msgs if m.name == "GET_FEATURES" and m.reply]
    acks = [m for m in msgs if m.name == "SET_FEATURES"]
    assert offers and acks
    # What QEMU saw offered and what it acked lack EVENT_IDX ...
    assert all(not m.payload["features"] & EVENT_IDX for m in offers + acks)
    assert all("RING_EVENT_IDX" not in m.payload["features_names"] for m in acks)
    # ... although qemu-storage-daemon offered it: each change is a note with both bytes.
    notes = [event_info(f) for f in cap.frames if f.kind == "note"]
    fired = [n for n in notes if n.get("rule") == rule]
    assert fired and all(n["action"] == "mask-features" for n in fired)
    originals = [int.from_bytes(bytes.fromhex(n["original"])[12:20], "little") for n in fired]
    assert any(v & EVENT_IDX for v in originals)
    assert unanswered(cap) == []
