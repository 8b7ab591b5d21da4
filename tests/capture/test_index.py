"""CaptureIndex: random access equals the sequential read; following a growing file."""

from __future__ import annotations

import os
import random

import pytest
from capture_samples import mixed_frames, small_frames

from vuinspect.capture import CaptureError, CaptureIndex, CaptureReader, CaptureWriter, build_index
from vuinspect.frames import Frame


def written(path, frames: list[Frame]):
    """``path`` holding ``frames`` (a capture written as the proxy would)."""
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    return path


def test_random_access_equals_sequential_read(tmp_path):
    path = tmp_path / "c.pcapng"
    frames = mixed_frames() + small_frames(500, conn=9)
    written(path, frames)
    sequential = list(CaptureReader(path))
    assert sequential == frames
    with build_index(path) as index:
        assert isinstance(index, CaptureIndex) and len(index) == len(frames) and index.error is None
        order = list(range(len(frames)))
        random.Random(4).shuffle(order)
        for i in order:
            assert index.frame(i) == sequential[i]
        assert index.frame(-1) == sequential[-1]
        with pytest.raises(IndexError):
            index.frame(len(frames))
        assert [i.description for i in index.interfaces][:2] == ["conn 7 main", "conn 1 main"]


def test_incremental_update_follows_a_live_writer(tmp_path):
    path = tmp_path / "live.pcapng"
    frames = small_frames(300)
    w = CaptureWriter(path)
    index = build_index(path)  # only the section header so far
    assert len(index) == 0 and index.error is None
    seen = 0
    for chunk in (frames[:1], frames[1:50], frames[50:51], frames[51:]):
        for f in chunk:
            w.write(f)
        assert index.update() == 0  # still buffered in the writer
        w.flush()
        assert index.update() == len(chunk)
        seen += len(chunk)
        assert len(index) == seen and index.frame(seen - 1) == frames[seen - 1]
    assert index.update() == 0
    w.close()
    assert [index.frame(i) for i in range(len(index))] == frames
    index.close()


def test_half_written_block_is_picked_up_when_completed(tmp_path):
    whole = tmp_path / "whole.pcapng"
    frames = small_frames(10)  # an open event and 10 data frames
    data = written(whole, frames).read_bytes()
    with build_index(whole) as ref:
        last = ref.offsets[-1]
    live = tmp_path / "live.pcapng"
    live.write_bytes(data[: last + 10])
    index = build_index(live)
    assert len(index) == 10 and index.error is not None and index.error.offset == last
    assert "cut short" in index.error.reason
    with open(live, "ab") as f:
        f.write(data[last + 10 :])
    assert index.update() == 1 and index.error is None
    assert len(index) == 11 and index.frame(10) == frames[10]
    index.close()


def test_empty_file_then_capture_starts(tmp_path):
    path = tmp_path / "later.pcapng"
    path.touch()
    index = build_index(path)
    assert len(index) == 0 and index.error is None
    assert index.update() == 0
    with CaptureWriter(path) as w:  # truncates and writes: the file grows from 0
        w.write(Frame(1, 1, "main", "f2b", b"x"))
    assert index.update() == 1 and index.frame(0) == Frame(1, 1, "main", "f2b", b"x")
    index.close()


def test_shrinking_file_is_reported_not_crashed(tmp_path):
    path = tmp_path / "c.pcapng"
    written(path, small_frames(5))
    index = build_index(path)
    os.truncate(path, 40)
    assert index.update() == 0
    assert isinstance(index.error, CaptureError) and "shrank" in index.error.reason
    index.close()


def test_update_in_steps_gives_the_same_index(tmp_path):
    path = tmp_path / "c.pcapng"
    frames = mixed_frames() + small_frames(200, conn=3)
    written(path, frames)
    whole = build_index(path)
    stepped = CaptureIndex(path)
    steps = 0
    while True:
        stepped.update(max_bytes=1000)
        steps += 1
        assert stepped.error is None and stepped.scanned <= stepped.size
        if stepped.scanned == stepped.size:
            break
    assert steps > 10 and stepped.size == os.path.getsize(path)
    assert list(stepped.offsets) == list(whole.offsets)
    assert [stepped.frame(i) for i in range(len(stepped))] == frames
    whole.close()
    stepped.close()
