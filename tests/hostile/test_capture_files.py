"""Hostile capture files (F audit): lengths that lie, texts that drive terminals.

Each test failed on the code before its fix; those marked xfail(strict) name
the file to fix (owned by another part) and pass once it is fixed.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from vuinspect.capture import CaptureReader, CaptureWriter, pseudohdr
from vuinspect.capture.index import build_index
from vuinspect.capture.pcapng import EXPORTED_PDU_PREFIX, MAX_BLOCK_LEN
from vuinspect.frames import Frame, event_frame

from .conftest import EVIL, cli, raw_in

pytestmark = pytest.mark.timeout(60)

TS = 1_764_000_000_000_000_000
GET_FEATURES = struct.pack("<III", 1, 1, 0)
LUA = Path(__file__).resolve().parents[2] / "dissectors" / "vhost_user.lua"


def _pcap_with_lying_record(path: Path, caplen: int) -> None:
    """A classic pcap: one good record, then one announcing ``caplen`` bytes (sparse)."""
    pkt = EXPORTED_PDU_PREFIX + pseudohdr.encode(Frame(TS, 1, "main", "f2b", GET_FEATURES))
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 252)
    good = struct.pack("<IIII", 1, 0, len(pkt), len(pkt)) + pkt
    lying = struct.pack("<IIII", 2, 0, caplen, caplen)
    path.write_bytes(head + good + lying)
    with open(path, "r+b") as f:  # holes: costs no disk, reads as zeros
        f.truncate(len(head + good + lying) + caplen)


def test_a_pcap_record_length_is_bounded_as_a_pcapng_block(tmp_path: Path) -> None:
    """A record announcing 160 MiB is damage, not 160 MiB (twice, joined) in memory.

    Before: the reader handed dpkt whatever the record said (up to 4 GiB from a
    sparse file); the index already refused past MAX_BLOCK_LEN.
    """
    path = tmp_path / "lying.pcap"
    caplen = MAX_BLOCK_LEN + (96 << 20)
    _pcap_with_lying_record(path, caplen)
    tracemalloc.start()
    try:
        reader = CaptureReader(path)
        frames = list(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 1
    assert reader.error is not None
    assert reader.error.reason == f"packet record at offset 86 has an invalid length {caplen}"
    assert reader.error.offset == 86
    assert peak < 16 << 20, f"{peak >> 20} MiB held for a lying record"
    with build_index(path) as index:  # the same words as the index
        assert len(index) == 1 and index.error is not None
        assert index.error.reason == reader.error.reason


def _hostile_capture(path: Path) -> Path:
    frames = [
        event_frame(
            "open",
            TS,
            1,
            {"label": f"L{EVIL}", "orientation": "frontend-connects", "device": "blk"},
        ),
        Frame(TS + 1, 1, "main", "f2b", GET_FEATURES, (f"fd{EVIL}",)),
        Frame(TS + 2, 1, "main", "b2f", struct.pack("<IIIQ", 1, 5, 8, 0)),
        event_frame("note", TS + 3, 1, {"text": f"N{EVIL}", "rule": f"r{EVIL}"}),
        event_frame("close", TS + 4, 1, {"reason": f"R{EVIL}", "by": "backend"}),
    ]
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    return path


def test_read_outputs_carry_no_raw_control_or_bidi_text(tmp_path: Path) -> None:
    """text, NDJSON and -T fields of labels, fd texts, notes and close reasons."""
    path = _hostile_capture(tmp_path / "evil.pcapng")
    fields = ["-T", "fields", "-e", "payload.label", "-e", "fds", "-e", "payload.text"]
    for extra in ([], ["--json"], [*fields, "-e", "payload.reason"]):
        res = cli("read", *extra, str(path))
        assert res.returncode == 0, res.stderr
        out = res.stdout.decode()
        assert not raw_in(out), (extra, raw_in(out))
        assert len(out.splitlines()) == 5  # no line forged by U+2028 or \n
        if extra == ["--json"]:  # the exact text, as JSON escapes
            assert json.loads(out.splitlines()[0])["payload"]["label"] == f"L{EVIL}"


def test_read_stats_escapes_labels_and_close_reasons(tmp_path: Path) -> None:
    path = _hostile_capture(tmp_path / "evil.pcapng")
    res = cli("read", "--stats", str(path))
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert not raw_in(out), raw_in(out)
    assert "L\\x1b]0;PWN\\x07" in out and "R\\x1b]0;PWN" in out


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None or not LUA.exists(), reason="tshark or Lua")
def test_lua_info_and_expert_texts_escape_bidi_and_line_separators(tmp_path: Path) -> None:
    path = _hostile_capture(tmp_path / "evil.pcapng")
    for args in (
        ["-T", "fields", "-e", "_ws.col.Info", "-e", "_ws.expert.message"],
        ["-V", "-O", "vhost_user"],
    ):
        proc = subprocess.run(
            ["tshark", "-r", str(path), "-X", f"lua_script:{LUA}", *args],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.decode("utf-8", "replace")
        assert not raw_in(out), (args[0], raw_in(out))


def test_read_rings_detail_escapes_header_field_names(tmp_path: Path) -> None:
    sample = {
        "vring": 0,
        "layout": "split",
        "num": 256,
        "avail_idx": 1,
        "used_idx": 0,
        "in_flight": 1,
        "chains": [
            {"head": 0, "readable": 1, "writable": 0, "descs": [], "header": {f"k{EVIL}": 5}}
        ],
    }
    from vuinspect.tui.queues import chains_text

    shown = chains_text(1, 0, 2, sample).plain  # the TUI's chains screen (Rich keeps ESC)
    assert "k\\x1b]0;PWN" in shown and not raw_in(shown), raw_in(shown)
    path = tmp_path / "ring.pcapng"
    with CaptureWriter(path) as w:
        w.write(event_frame("open", TS, 1, {"label": "l"}))
        w.write(Frame(TS + 1, 1, "main", "f2b", json.dumps(sample).encode(), (), "ring"))
    res = cli("read", "--rings", "--detail", str(path))
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "k\\x1b]0;PWN" in out  # the line is there
    assert not raw_in(out), raw_in(out)


def test_long_labels_and_comments_from_a_capture_can_be_written_back(tmp_path: Path) -> None:
    """A label or a comment over 64 KiB (a pcapng option's u16 length) is still recordable.

    Before: CaptureWriter.write raised struct.error ("ushort format requires
    0 <= number <= 65535") for an open event whose label (or, escaped, 16 K
    control characters) or a frame whose comment passed 65,535 bytes: the
    TUI's save (``w``) of a capture holding one stopped there.
    """
    lines = [f"line {i} " + "c" * 30_000 for i in range(4)]  # 4 comment options once read
    frames = [
        event_frame("open", TS, 1, {"label": "x" * 70_000}),
        Frame(TS + 1, 1, "main", "f2b", GET_FEATURES, comment="\n".join(lines)),
        event_frame("open", TS + 2, 2, {"label": "\x1b" * 20_000}),
        Frame(TS + 3, 2, "main", "f2b", GET_FEATURES, comment="y" * 200_000),
    ]
    path = tmp_path / "long.pcapng"
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    reader = CaptureReader(path)
    got = list(reader)
    assert reader.error is None and len(got) == 4
    assert got[1].comment == "\n".join(lines)  # split at its line ends: read back exactly
    assert got[3].comment is not None and got[3].comment.replace("\n", "") == "y" * 200_000
    assert all(len(i.name.encode()) <= 1024 for i in reader.interfaces)
    assert reader.interfaces[0].name.startswith("xxx")
    if shutil.which("tshark"):
        proc = subprocess.run(
            ["tshark", "-r", str(path)], capture_output=True, timeout=30, check=False
        )
        assert proc.returncode == 0, proc.stderr


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None or not LUA.exists(), reason="tshark or Lua")
def test_merged_runs_near_the_u32_end_keep_distinct_conn_numbers_in_wireshark(
    tmp_path: Path,
) -> None:
    """``cat`` of two runs that both used conn 0xFFFFFFFF, the first also conn 0."""
    runs = []
    for k, conns in enumerate(((0, 0xFFFFFFFF), (0xFFFFFFFF,))):
        path = tmp_path / f"run{k}.pcapng"
        with CaptureWriter(path) as w:
            for conn in conns:
                w.write(event_frame("open", TS + k * 10, conn, {"label": f"run {k}"}))
                w.write(Frame(TS + k * 10 + 1, conn, "main", "f2b", GET_FEATURES))
        runs.append(path.read_bytes())
    merged = tmp_path / "merged.pcapng"
    merged.write_bytes(b"".join(runs))
    ours = [f.conn for f in CaptureReader(merged)]
    assert len(set(ours)) == 3  # three connections, three numbers
    proc = subprocess.run(
        ["tshark", "-r", str(merged), "-X", f"lua_script:{LUA}", "-T", "fields"]
        + ["-e", "vhost_user.conn"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    theirs = [int(x) for x in proc.stdout.decode().split()]
    assert theirs == ours


def test_a_packet_of_many_messages_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """50 000 SET_OWNER (no reply due) in one 600 KB packet, read and dropped one by one."""
    from vuinspect.api import linked
    from vuinspect.pipeline import Pipeline

    path = tmp_path / "one-packet.pcapng"
    with CaptureWriter(path) as w:  # one packet: under MAX_CAPLEN, the writer keeps it whole
        w.write(Frame(TS, 1, "main", "f2b", struct.pack("<III", 3, 1, 0) * 50_000))
    seen = 0
    tracemalloc.start()
    try:
        for _msg in linked(Pipeline(), CaptureReader(path)):
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 50_000
    assert peak < 8 << 20, f"{peak >> 20} MiB held for one packet of 600 KB"


def _block(btype: int, body: bytes) -> bytes:
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


@pytest.mark.parametrize(
    ("options", "comment"),
    [
        (_option(1, b"ok") + _option(0, b""), "ok"),  # 12 bytes of options: a short comment
        (_option(1, b"abcd"), "abcd"),  # no end-of-options (it is optional)
        (_option(1, b"") + _option(0, b""), None),  # an empty comment is no comment
        (_option(2, struct.pack("<I", 1)) + _option(1, b""), None),
    ],
    ids=["short", "no-end", "empty", "flags-then-empty"],
)
def test_short_comments_read_the_same_by_the_reader_and_the_index(
    tmp_path: Path, options: bytes, comment: str | None
) -> None:
    """Fuzz inputs 21489 and 29761: the reader's fast path skipped options that fit where
    ``epb_flags`` goes (12 bytes), so a comment of up to 4 bytes was lost by ``read`` and
    shown by the TUI (the index reads every packet through the general path)."""
    pkt = EXPORTED_PDU_PREFIX + pseudohdr.encode(Frame(TS, 1, "main", "f2b", GET_FEATURES))
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 252, 0, 0) + _option(9, b"\x09") + _option(0, b""))
    epb = _block(
        6,
        struct.pack("<IIIII", 0, 0, 1, len(pkt), len(pkt))
        + pkt
        + b"\0" * (-len(pkt) % 4)
        + options,
    )
    path = tmp_path / "short-comment.pcapng"
    path.write_bytes(shb + idb + epb)
    reader = CaptureReader(path)
    (frame,) = list(reader)
    assert reader.error is None
    with build_index(path) as index:
        assert index.frame(0) == frame
    assert frame.comment == comment
