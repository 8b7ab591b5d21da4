"""`vuinspect read` and the data plane: --rings timeline, --detail, --stats, the default list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.capture.writer import CaptureWriter
from vuinspect.dataplane import RingSample
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame, notify_frame, ring_frame

S = 1_000_000_000
T0 = 1_700_000_000 * S
CHAIN = {
    "head": 3,
    "descs": [
        {
            "index": 3,
            "addr": 0x1000,
            "len": 16,
            "flags": 1,
            "flag_names": ["NEXT"],
            "next": 4,
            "indirect_table": None,
        }
    ],
    "problems": [],
    "header": {
        "layout": "virtio_blk_req",
        "type": 1,
        "type_name": "OUT",
        "ioprio": 0,
        "sector": 8,
        "barrier": False,
    },
    "truncated": False,
    "readable": 16,
    "writable": 1,
}


def ring(t: float, avail: int, used: int, **extra) -> Frame:
    s = RingSample(0, T0 + int(t * S), "split", 256, avail_idx=avail, used_idx=used)
    return ring_frame(s.ts_ns, 1, {**s.to_json(), **extra})


@pytest.fixture(scope="module")
def cap(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rings") / "rings.pcapng"
    frames = [
        event_frame("open", T0, 1, {"label": "t\x1b[31m", "device": "blk"}),
        Frame(T0 + 1, 1, "main", "f2b", build("main", 1)),
        ring(0.0, 0, 0, event="start"),
        notify_frame(T0 + 5_000_000, 1, 0, "kick", 7, T0 + 1_000_000, T0 + 9_000_000),
        ring(0.1, 4, 0, chains=[CHAIN]),
        ring(0.6, 4, 0),
        ring(1.1, 4, 0),
        ring(1.6, 4, 0),
        ring(2.2, 4, 0),
        ring(2.5, 4, 4, event="\x1b]0;x\x07"),
    ]
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    return path


def vuinspect(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", *args],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_default_list_leaves_routine_samples_out(cap: Path) -> None:
    lines = vuinspect(str(cap)).splitlines()
    assert any("GET_FEATURES" in x for x in lines)
    rings = [x for x in lines if " RING " in x]
    # only the sample raising the stall and the one resolving it
    assert len(rings) == 2 and "backend_stalled" in rings[0] and "resolved" in rings[1]
    assert not any("NOTIFY" in x for x in lines)


def test_rings_timeline_and_detail(cap: Path) -> None:
    lines = vuinspect("--rings", str(cap)).splitlines()
    assert len(lines) == 8 and not any("GET_FEATURES" in x for x in lines)
    assert "vring 0 split num=256 avail=4 used=0 in_flight=4" in lines[2]
    assert "NOTIFY  vring 0 kick x7 over 8.0 ms" in lines[1]
    assert "backend_stalled: vring 0: 4 in flight" in lines[6]
    assert "resolved backend_stalled after 2.4 s (progress)" in lines[7]
    assert "\x1b" not in "".join(lines) and "\\x1b]0;x\\x07" in lines[7]
    detail = vuinspect("--rings", "--detail", str(cap)).splitlines()
    assert (
        "        head 3: 1 desc, 16 B out, 1 B in  virtio_blk_req OUT type=1 ioprio=0 "
        "sector=8" in detail
    )
    assert any("desc 3 addr=0x1000 len=16 NEXT" in x for x in detail)


def test_json_shows_stall_with_in_flight(cap: Path) -> None:
    rows = [json.loads(x) for x in vuinspect("--json", str(cap)).splitlines()]
    stalled = [r for r in rows if "backend_stalled" in [p["code"] for p in r["problems"]]]
    assert len(stalled) == 1 and stalled[0]["kind"] == "ring"
    assert stalled[0]["payload"]["in_flight"] == 4 and stalled[0]["severity"] == "error"


def test_stats_per_vring(cap: Path) -> None:
    text = vuinspect("--stats", str(cap))
    assert "Vrings (data plane)" in text and "RING" not in text
    row = text.splitlines()[-1].split()
    assert row[:6] == ["1", "0", "256", "4", "4", "0"] and row[6] == "4" and row[8] == "7"
    data = json.loads(vuinspect("--stats", "--json", str(cap)))
    (r,) = data["rings"]
    assert (r["kicks"], r["progress"], r["samples"], r["problems"]) == (7, 4, 7, [])
