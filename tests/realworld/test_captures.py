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
