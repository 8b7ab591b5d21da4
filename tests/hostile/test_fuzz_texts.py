"""The fuzzer's hostile texts (F audit): they reach the outputs, and a raw one is caught."""

from __future__ import annotations

import random
import struct

import pytest

from vuinspect.frames import Frame
from vuinspect.fuzz import check
from vuinspect.fuzz.mutate import _op_hostile_text
from vuinspect.render import summary_line
from vuinspect.samples import device_start


def test_hostile_texts_reach_summary_lines_escaped() -> None:
    rng = random.Random(7)
    escaped = 0
    for _ in range(60):
        frames = list(device_start())
        for _ in range(3):
            _op_hostile_text(frames, rng)
        check.check_frames(frames)  # raises on a raw control character in a line
        escaped += sum("\\x1b" in summary_line(m) for m in check.run_pipeline(frames))
    assert escaped > 20


def test_a_raw_control_character_in_a_line_is_an_invariant_error(monkeypatch) -> None:
    monkeypatch.setattr(check, "summary_line", lambda m: "line \x1b[2J")
    frame = Frame(1, 1, "main", "f2b", struct.pack("<III", 1, 1, 0))
    with pytest.raises(check.InvariantError, match="raw control text"):
        check.check_frames([frame])


def test_ring_and_notify_frames_are_not_data_bytes() -> None:
    """A pseudo-header whose kind byte turned data into ring (fuzz input 16601): the
    RING message it gives is not data the stream lost or invented."""
    data = struct.pack("<III", 1, 1, 0)
    for kind in ("ring", "notify"):
        check.check_frames([Frame(1, 1, "main", "f2b", data, (), kind)])
