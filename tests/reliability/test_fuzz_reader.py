"""Capture reader fuzzing: random blocks, byte flips and cuts, then `vuinspect read` on mutants.

The reader's contract: CaptureFormatError for input that is not ours (at open,
or before the first frame of ours), otherwise iteration stops with
``reader.error`` set; never another exception.  What it did read goes through
the pipeline invariants too, and the random-access index (the TUI's way in)
agrees on it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vuinspect.capture import CaptureError, CaptureReader, build_index
from vuinspect.fuzz.check import check_capture_bytes, read_capture_bytes
from vuinspect.fuzz.mutate import INTERESTING_U32, blocks, capture_bytes, mutate_capture
from vuinspect.samples import device_start, every_message

from .conftest import report, scaled

CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))


def seed_captures() -> list[bytes]:
    out = [
        capture_bytes(device_start()),
        capture_bytes(every_message()),
        capture_bytes(device_start(), big_endian=True),
    ]
    out += [p.read_bytes() for p in CAPTURES]
    return out


@pytest.mark.timeout(scaled(120, 3600))
def test_mutated_captures(fuzz_count) -> None:
    seeds = seed_captures()
    n = fuzz_count(1200)
    seen = {"ok": 0, "damaged": 0, "refused": 0}
    for i in range(n):
        rng = random.Random(i)
        data = mutate_capture(rng.choice(seeds), rng)
        try:
            out = check_capture_bytes(data, index=i % 4 == 0)
        except Exception as exc:
            raise AssertionError(f"input {i} (random.Random({i})) failed: {exc!r}") from exc
        seen[out.reader] += 1
    assert all(seen.values()), seen  # the mutants reach every outcome
    report("reader_mutated_captures", inputs=n, **seen, failures=0)


def test_every_cut_is_a_prefix() -> None:
    """A file cut anywhere reads as the frames before the cut, then an error or a clean end."""
    frames = device_start()
    data = capture_bytes(frames)
    ends = {off + blen for off, blen in blocks(data)}
    for cut in range(0, len(data)):
        status, got, reader = read_capture_bytes(data[:cut])
        check_capture_bytes(data[:cut], prefix_of=frames)
        if cut in ends:
            assert status == "ok", (cut, reader.error if reader else None)
        elif cut >= 12:
            assert status == "damaged" and reader.error.offset is not None, cut


_block = st.builds(
    lambda btype, body, declared, trailer: (btype, body, declared, trailer),
    st.one_of(st.sampled_from((1, 2, 3, 4, 5, 6, 0xBAD, 0x0A0D0D0A)), st.integers(0, 2**32 - 1)),
    st.binary(max_size=64).map(lambda b: b + bytes(-len(b) % 4)),
    st.one_of(st.none(), st.sampled_from(INTERESTING_U32)),
    st.one_of(st.none(), st.sampled_from(INTERESTING_U32)),
)


@settings(
    max_examples=scaled(400, 4000), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(st.one_of(st.integers(0, 200), _block), min_size=1, max_size=12), st.booleans())
def test_random_block_sequences(items, big) -> None:
    """Real blocks (by index into a sample capture) and random ones, in any order."""
    import struct

    real = capture_bytes(device_start(), big_endian=big)
    spans = blocks(real)
    order = ">" if big else "<"
    out = [real[: spans[0][1]]]  # start with a real section header most of the time
    for item in items:
        if isinstance(item, int):
            off, blen = spans[item % len(spans)]
            out.append(real[off : off + blen])
        else:
            btype, body, declared, trailer = item
            blen = 12 + len(body)
            out.append(
                struct.pack(order + "II", btype, blen if declared is None else declared)
                + body
                + struct.pack(order + "I", blen if trailer is None else trailer)
            )
    check_capture_bytes(b"".join(out))
    check_capture_bytes(b"".join(out[1:]))


@pytest.mark.timeout(scaled(120, 3600))
def test_read_cli_on_mutants_never_tracebacks(tmp_path) -> None:
    """`vuinspect read --json` on mutated captures: NDJSON or one clear line, no traceback."""
    seeds = seed_captures()
    paths = []
    for i in range(12):
        rng = random.Random(1000 + i)
        p = tmp_path / f"mutant{i}.pcapng"
        p.write_bytes(mutate_capture(rng.choice(seeds), rng, ops=rng.randint(2, 6)))
        paths.append(p)
    codes = set()
    for p in paths:
        proc = subprocess.run(
            [sys.executable, "-m", "vuinspect", "read", "--json", str(p)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        codes.add(proc.returncode)
        assert "Traceback" not in proc.stderr, f"{p.name}:\n{proc.stderr}"
        assert proc.returncode in (0, 1, 2), (p.name, proc.returncode, proc.stderr)
        for line in proc.stdout.splitlines():
            json.loads(line)
        if proc.returncode:
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("vuinspect read: "), proc.stderr
    assert codes - {0}, "no mutant was reported as damaged or refused"


def test_bad_later_section_header_is_damage_not_a_foreign_file(tmp_path) -> None:
    """A second section header with a bad version, after frames of ours, made the reader and
    the index raise CaptureFormatError mid-file ('not a vuinspect capture', exit 1) instead
    of reporting damage at that offset (found by the 1M-input run, seed 114195)."""
    import struct

    first = capture_bytes(device_start())
    second = bytearray(capture_bytes(device_start()[:3]))
    struct.pack_into("<H", second, 12, 0x7F00)  # major version 32512
    path = tmp_path / "two-sections.pcapng"
    path.write_bytes(first + bytes(second))
    reader = CaptureReader(str(path))
    frames = list(reader)
    assert len(frames) == len(device_start())
    assert isinstance(reader.error, CaptureError) and reader.error.offset == len(first)
    with build_index(str(path)) as index:
        assert len(index) == len(frames) and index.error is not None
        assert index.error.offset == len(first)
    proc = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and f"capture damaged at byte {len(first)}" in proc.stderr


@pytest.mark.parametrize("blen", [12, 16, 20, 28])
def test_short_packet_block_at_the_end(tmp_path, blen) -> None:
    """An EPB shorter than its fixed 32 bytes as the last block: the index unpacked past it and
    raised struct.error (found by the 1M-input run, seed 58857); the reader reports damage."""
    import struct

    good = capture_bytes(device_start())
    path = tmp_path / "short-epb.pcapng"
    path.write_bytes(
        good + struct.pack("<II", 6, blen) + bytes(blen - 12) + struct.pack("<I", blen)
    )
    reader = CaptureReader(str(path))
    assert len(list(reader)) == len(device_start())
    assert reader.error is not None and reader.error.offset == len(good)
    with build_index(str(path)) as index:
        assert len(index) == len(device_start())
        assert index.error is not None and index.error.offset == len(good)
