"""Lua dissector fuzzing: mutated sessions and mutated files through tshark with our Lua.

What must never appear: a Lua error, a "Dissector bug", or "[Malformed Packet:
vhost_user]" (a tvb range past the bytes present raised inside our dissector).  Malformed
*expert infos* are the dissector's job on mutants; on the unmutated captures
there must be none.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vuinspect.capture import CaptureWriter, read_frames
from vuinspect.frames import Frame
from vuinspect.fuzz.mutate import capture_bytes, mutate_capture, mutate_frames
from vuinspect.samples import device_start

from .conftest import report, scaled

LUA = Path(__file__).parents[2] / "dissectors" / "vhost_user.lua"
CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))

pytestmark = [
    pytest.mark.timeout(scaled(600, 3600)),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
    pytest.mark.skipif(not LUA.exists(), reason="dissectors/vhost_user.lua not generated yet"),
]
# Wireshark's own exported_pdu dissector may report damaged tags as "[Malformed Packet:
# exported_pdu]": that is the file's damage, not ours.
BAD = re.compile(r"Lua Error|Dissector bug|\[Malformed Packet: vhost", re.IGNORECASE)


def tshark(path: str | Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["tshark", "-r", str(path), "-X", f"lua_script:{LUA}", *extra],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=600,
    )


def bad_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if BAD.search(ln)]


def corpus() -> list[list[Frame]]:
    return [device_start()] + [list(read_frames(p)) for p in CAPTURES]


def test_unmutated_captures_have_no_malformed(tmp_path) -> None:
    paths = list(CAPTURES)
    sample = tmp_path / "device-start.pcapng"
    sample.write_bytes(capture_bytes(device_start()))
    paths.append(sample)
    for p in paths:
        res = tshark(p, "-V")
        assert res.returncode == 0, res.stderr[-1000:]
        assert not bad_lines(res)
        assert "[Expert Info (Error/Malformed)" not in res.stdout, p


def test_mutated_sessions(tmp_path) -> None:
    """Many mutated sessions in one file, each on its own connection numbers."""
    mutants = scaled(200, 5000)
    seeds = corpus()
    per_file = 250
    packets = 0
    files = 0
    for start in range(0, mutants, per_file):
        path = tmp_path / f"mutants{start}.pcapng"
        with CaptureWriter(str(path)) as w:
            for i in range(start, min(mutants, start + per_file)):
                rng = random.Random(i)
                for f in mutate_frames(rng.choice(seeds), rng):
                    if len(f.fds) <= 253 and 0 <= f.ts_ns < 1 << 64:
                        w.write(dataclasses.replace(f, conn=(i * 4 + f.conn % 4) & 0xFFFFFFFF))
                        packets += 1
        res = tshark(path, "-V")
        files += 1
        assert res.returncode == 0, res.stderr[-1000:]
        assert not bad_lines(res), bad_lines(res)[:5]
        assert "[Expert Info (Error/Malformed)" in res.stdout  # the mutants were seen as damaged
    report(
        "lua_fuzz_sessions", mutated_sessions=mutants, packets=packets, files=files, lua_errors=0
    )


def test_mutated_files(tmp_path) -> None:
    """Byte- and block-level damage to whole files (tshark stops at file damage itself)."""
    n = scaled(40, 1000)
    seeds = [capture_bytes(f) for f in corpus()] + [capture_bytes(device_start(), big_endian=True)]
    for i in range(n):
        rng = random.Random(10_000 + i)
        path = tmp_path / f"m{i % 8}.pcapng"
        path.write_bytes(mutate_capture(rng.choice(seeds), rng))
        res = tshark(path, "-V")
        assert not bad_lines(res), (i, bad_lines(res)[:5])
        assert res.returncode in (0, 2), (i, res.stderr[-500:])  # 2: tshark's own "cut short"
    report("lua_fuzz_files", mutated_files=n, lua_errors=0)


def test_pseudo_header_damage(tmp_path) -> None:
    """Damaged pseudo-headers (fd counts, lengths, kinds) on otherwise intact blocks."""
    data = bytearray(capture_bytes(device_start()))
    rng = random.Random(3)
    for pos in [m.start() for m in re.finditer(rb"VU\x01", bytes(data))]:
        field = rng.choice((3, 4, 5, 6, 7, 13, 14, 15))  # kind, hdr_len, channel, dir, nfds, fd len
        data[pos + field] = rng.choice((0, 1, 2, 0x7F, 0xFE, 0xFF))
    path = tmp_path / "pseudo.pcapng"
    path.write_bytes(bytes(data))
    res = tshark(path, "-V")
    assert res.returncode == 0 and not bad_lines(res), bad_lines(res)[:5]
    assert os.path.getsize(path) == len(data)


def test_event_text_stays_valid_utf8(tmp_path) -> None:
    path = tmp_path / "note.pcapng"
    # invalid bytes, a cut 3-byte sequence, a surrogate, a 4-byte emoji, a cut 4-byte one
    raw = b"\xff\xfe ok \xe2\x82 x \xed\xa0\x80 \xf0\x9f\x98\x80 \xf0\x9f\x98"
    with CaptureWriter(str(path)) as w:
        w.write(Frame(1, 1, "main", "f2b", raw, (), "note"))
    res = subprocess.run(
        ["tshark", "-r", str(path), "-X", f"lua_script:{LUA}", "-V"],
        capture_output=True,
        timeout=60,
    )
    out = res.stdout.decode("utf-8")  # strict: raises on any invalid byte
    assert "NOTE " + raw.decode("utf-8", "replace") in out  # U+FFFD exactly where Python puts them
