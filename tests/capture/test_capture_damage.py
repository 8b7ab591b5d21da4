"""Damaged and foreign input: the reader keeps whole frames, reports offsets, never crashes."""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import struct

import dpkt
import pytest
from capture_samples import block, epb, exported_pdu, idb, mixed_frames, pseudo, shb, small_frames
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vuinspect.capture import (
    CaptureError,
    CaptureFormatError,
    CaptureReader,
    CaptureWriter,
    build_index,
)


def capture_with_ends(frames, big_endian=False):
    """Bytes of a capture and the file size after each frame (one flush per frame)."""
    buf = io.BytesIO()
    ends = []
    with CaptureWriter(buf, big_endian=big_endian) as w:
        for f in frames:
            w.write(f)
            w.flush()
            ends.append(len(buf.getvalue()))
    return buf.getvalue(), ends


def read_all(data, chunk=None):
    kw = {"chunk_size": chunk} if chunk else {}
    reader = CaptureReader(io.BytesIO(data), **kw)
    return list(reader), reader.error


def index_all(tmp_path, data, name="c.pcapng"):
    path = tmp_path / name
    path.write_bytes(data)
    with build_index(path) as index:
        frames = []
        for i in range(len(index)):
            try:
                frames.append(index.frame(i))
            except CaptureError as exc:  # damage inside a packet shows when it is read
                return frames, exc, list(index.offsets)
        return frames, index.error, list(index.offsets)


@pytest.mark.parametrize("big_endian", [False, True])
def test_truncation_at_every_offset_of_the_last_three_blocks(tmp_path, big_endian):
    frames = small_frames(6)
    data, ends = capture_with_ends(frames, big_endian)
    # every frame after the first reuses its interface: the last three flushes are one EPB each
    start = ends[-4]
    for cut in range(start, len(data) + 1):
        whole = sum(1 for e in ends if e <= cut)
        for got, error in (
            read_all(data[:cut]),
            read_all(data[:cut], chunk=5),
            index_all(tmp_path, data[:cut])[:2],
        ):
            assert got == frames[:whole], cut
            if cut in ends:
                assert error is None, cut
                continue
            block_at = max(e for e in ends if e <= cut)
            assert isinstance(error, CaptureError) and error.offset == block_at, (cut, error)
            present = cut - block_at
            if present >= 8:
                blen = ends[whole] - block_at
                assert re.fullmatch(
                    rf"block at offset {block_at} cut short: header says {blen} bytes, {present} present",
                    error.reason,
                ), error.reason
            else:
                assert "cut short" in error.reason and str(present) in error.reason


def test_index_offsets_are_the_packet_blocks(tmp_path):
    frames = small_frames(6)
    data, ends = capture_with_ends(frames)
    _, error, offsets = index_all(tmp_path, data)
    assert error is None
    # frame k > 0 starts where frame k-1's flush ended; frame 0 follows its IDB
    assert offsets[1:] == ends[:-1]
    assert data[offsets[0] : offsets[0] + 4] == struct.pack("<I", 6)


def corrupt(data, at, value, fmt="<I"):
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


@pytest.fixture
def six():
    frames = small_frames(6)
    data, ends = capture_with_ends(frames)
    return frames, data, ends


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d, at, blen: corrupt(d, at + 4, blen + 1), r"invalid length \d+"),
        (lambda d, at, blen: corrupt(d, at + 4, 8), "invalid length 8"),
        (lambda d, at, blen: corrupt(d, at + 4, 0xFFFFFFF0), "invalid length 4294967280"),
        (lambda d, at, blen: corrupt(d, at + 4, blen + 4000), "cut short: header says"),
        (lambda d, at, blen: corrupt(d, at + 4, blen - 4), r"trailing length \d+ does not match"),
        (
            lambda d, at, blen: corrupt(d, at + blen - 4, blen + 4),
            r"trailing length \d+ does not match",
        ),
        (lambda d, at, blen: corrupt(d, at + 8, 9), "names interface 9, only 1 defined"),
        (
            lambda d, at, blen: corrupt(d, at + 20, 4000),
            "captured length 4000 exceeds block length",
        ),
        (lambda d, at, blen: corrupt(d, at + 48, 0x5658, ">H"), "bad pseudo-header magic"),
        (lambda d, at, blen: corrupt(d, at + 48 + 3, 7, "B"), "unknown frame kind 7"),
        (lambda d, at, blen: corrupt(d, at + 48 + 4, 500, ">H"), "pseudo-header length 500"),
    ],
)
def test_corrupt_block_stops_with_offset_and_keeps_earlier_frames(tmp_path, six, change, reason):
    frames, data, ends = six
    at = ends[2]  # the block of frame 3
    blen = ends[3] - at
    bad = change(data, at, blen)
    got, error = read_all(bad)
    assert got == frames[:3]
    assert error is not None and error.offset == at and re.search(reason, error.reason), error
    assert f"offset {at}" in error.reason
    # the index stops at the same block, or (damage inside the packet) frame(3) reports it
    iframes, ierror, _ = index_all(tmp_path, bad)
    assert iframes == frames[:3] and ierror.offset == at and re.search(reason, ierror.reason)


def test_unknown_and_other_blocks_are_skipped(tmp_path):
    frames = small_frames(3)
    data, ends = capture_with_ends(frames)
    extra = (
        block("<", 4, b"\x00" * 4)
        + block("<", 5, b"\x00" * 16)
        + block("<", 3, b"\x00" * 12)
        + block("<", 2, b"\x00" * 20)
        + block("<", 0x00000BAD, b"custom")
        + block("<", 0x40000BAD, b"")
    )
    spliced = data[: ends[1]] + extra + data[ends[1] :]
    assert read_all(spliced) == (frames, None)
    assert index_all(tmp_path, spliced)[:2] == (frames, None)


def test_concatenated_sections_with_both_byte_orders(tmp_path):
    a, b = small_frames(3, conn=1), mixed_frames()
    data = capture_with_ends(a)[0] + capture_with_ends(b, big_endian=True)[0]
    reader = CaptureReader(io.BytesIO(data))
    # the second section is another capture: its conn 1 (taken by the first) is shown as 8,
    # the next number above those used so far (its conn 7 came first)
    want = a + [dataclasses.replace(f, conn=8) if f.conn == 1 else f for f in b]
    assert list(reader) == want and reader.error is None
    assert [s.order for s in reader.sections] == ["<", ">"]
    assert index_all(tmp_path, data)[:2] == (want, None)


def test_foreign_tag_layouts_still_read():
    """An exported-PDU packet with extra tags before ours (another writer) is ours all the same."""
    payload = (
        struct.pack(">HH", 20, 4)
        + b"\x00\x00\x00\x07"
        + exported_pdu(b"vhost_user", pseudo(4, b"zz"))
    )
    got, error = read_all(shb() + idb() + epb("<", 0, 99, payload))
    assert error is None and [(f.conn, f.data, f.ts_ns) for f in got] == [(4, b"zz", 99)]


# -- not our file ------------------------------------------------------------------------


def classic_pcap():
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, nano=True)
    w.writepkt(b"\x00" * 60, ts=1.5)
    return buf.getvalue()


def ethernet_pcapng():
    buf = io.BytesIO()
    w = dpkt.pcapng.Writer(buf)  # linktype 1 (Ethernet), as other tools write
    w.writepkt(b"\xff" * 14 + b"\x00" * 46, ts=1.5)
    return buf.getvalue()


FOREIGN = [
    (b"", "empty input: no pcapng section header"),
    (b"hello world\nthis is text\n", "text file, not a pcapng capture (starts with 'hello world')"),
    (classic_pcap(), "classic pcap (libpcap) file with link type 1, not 252"),
    (gzip.compress(b"x" * 100), "gzip-compressed file"),
    (bytes(range(200, 256)), "not a pcapng capture (first bytes c8 c9 ca cb cc cd ce cf)"),
    (
        ethernet_pcapng(),
        "interface 0 has link type 1, not 252 (exported PDU): not a vuinspect capture",
    ),
    (shb() + idb(linktype=1), "interface 0 has link type 1"),
    (
        shb() + idb() + epb("<", 0, 1, exported_pdu(b"http", b"GET /")),
        "exported-PDU packet for dissector 'http', not vhost_user",
    ),
    (shb() + idb() + epb("<", 0, 1, b"\x00\x0c\x00\x04abcd"), "without end-of-options"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x11\x22\x33\x44" + b"\0" * 16, "bad byte-order magic"),
    (shb()[:12] + struct.pack("<HH", 2, 0) + shb()[16:], "pcapng version 2.0 is not supported"),
]


@pytest.mark.parametrize(("data", "reason"), FOREIGN)
def test_foreign_input_is_one_clear_format_error(tmp_path, data, reason):
    with pytest.raises(CaptureFormatError) as info:
        list(CaptureReader(io.BytesIO(data)))
    assert reason in str(info.value) and "\n" not in str(info.value)
    if data:  # an empty file is a capture not started yet, for the index
        with pytest.raises(CaptureFormatError, match=re.escape(reason)):
            index_all(tmp_path, data)


def test_format_error_is_raised_at_open_for_non_pcapng(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just text")
    with pytest.raises(CaptureFormatError, match="text file"):
        CaptureReader(path)


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="cannot open capture .*: No such file"):
        CaptureReader(tmp_path / "nope.pcapng")
    with pytest.raises(CaptureError, match="cannot open capture"):
        build_index(tmp_path / "nope.pcapng")


def test_foreign_packets_after_ours_are_skipped_and_counted(tmp_path):
    data = (
        shb()
        + idb()
        + idb(linktype=1)
        + epb("<", 0, 5, exported_pdu(b"vhost_user", pseudo(1, b"a")))
        + epb("<", 1, 6, b"\x00" * 60)
        + epb("<", 0, 7, exported_pdu(b"http", b"x"))
        + epb("<", 0, 8, exported_pdu(b"vhost_user", pseudo(1, b"b")))
    )
    reader = CaptureReader(io.BytesIO(data))
    assert [f.data for f in reader] == [b"a", b"b"] and reader.skipped == 2 and reader.error is None
    with _index(tmp_path, data) as index:
        assert [index.frame(i).data for i in range(len(index))] == [
            b"a",
            b"b",
        ] and index.skipped == 2


def _index(tmp_path, data):
    (tmp_path / "f.pcapng").write_bytes(data)
    return build_index(tmp_path / "f.pcapng")


# -- fuzz: "frames, an error, or a format error; never a traceback" -----------------------

BASE = capture_with_ends(mixed_frames()[:8])[0]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, len(BASE)),
)
def test_fuzz_damage_never_escapes(tmp_path, flips, cut):
    data = bytearray(BASE)
    for at, value in flips:
        data[at] = value
    data = bytes(data[:cut])
    try:
        reader = CaptureReader(io.BytesIO(data), chunk_size=64)
        frames = list(reader)
    except CaptureFormatError:
        frames = None
    path = tmp_path / "fuzz.pcapng"
    path.write_bytes(data)
    try:
        index = build_index(path)
    except CaptureFormatError:
        assert (
            frames is None or not frames
        )  # the reader refuses the same file, or saw nothing of ours
        return
    with index:
        iframes = []
        for i in range(len(index)):
            try:
                iframes.append(index.frame(i))
            except CaptureError:
                break
        if frames is not None and reader.error is None and index.error is None:
            assert iframes == frames
