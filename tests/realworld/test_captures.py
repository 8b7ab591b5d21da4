"""The recorded real captures in captures/ read back, decode cleanly and show their lifecycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from .captures import load, unanswered

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


@pytest.mark.parametrize(
    ("name", "orientation", "memory"),
    [
        ("blk", "frontend-connects", "ADD_MEM_REG"),
        ("fs", "frontend-connects", "ADD_MEM_REG"),
        ("net", "backend-connects", "SET_MEM_TABLE"),
    ],
)
def test_recorded_capture(name, orientation, memory):
    cap = load(CAPTURES / f"{name}.pcapng")
    assert [info["orientation"] for _, info in cap.opens()] == [orientation]
    assert len(cap.closes()) == 1
    names = cap.names()
    assert names[0] == "GET_FEATURES"
    assert memory in names and "SET_VRING_KICK" in names, names
    assert unanswered(cap) == []
    assert not [(m.name, m.problem_codes) for m in cap.messages if m.problems]
    fds = [d for m in cap.requests() if m.name == memory for d in m.fds]
    assert fds and all("memfd:" in d for d in fds)
    readme = (CAPTURES / "README.md").read_text()
    assert f"vuinspect demo --backend {name} -w captures/{name}.pcapng" in readme


def test_recorded_stall():
    """blk-stall.pcapng: the blk run with qemu-storage-daemon stopped mid-write; the ring
    samples show the stall raised (with what was in flight) and resolved by progress."""
    cap = load(CAPTURES / "blk-stall.pcapng")
    assert unanswered(cap) == [] and len(cap.closes()) == 1
    rings = [m for m in cap.messages if m.kind == "ring"]
    stalled = [m for m in rings if "backend_stalled" in m.problem_codes]
    assert len(stalled) == 1 and stalled[0].payload["in_flight"] >= 1
    assert stalled[0].payload["chains"], "the requests in flight, decoded"
    resolved = [r for m in rings for r in m.payload.get("resolved", ())]
    assert [(r["code"], r["resolution"]) for r in resolved] == [("backend_stalled", "progress")]
    assert resolved[0]["duration_ns"] >= 2_000_000_000
    # nothing else is flagged: the stall is the one problem of this run
    assert [m.problem_codes for m in cap.messages if m.problems] == [["backend_stalled"]]
    readme = (CAPTURES / "README.md").read_text()
    assert "scripts/record-stall.py captures/blk-stall.pcapng" in readme
