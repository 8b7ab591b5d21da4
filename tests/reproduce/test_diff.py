"""``vuinspect diff``: two captures compared per connection, message by message."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

from vuinspect.capture import CaptureWriter, read_frames
from vuinspect.cli import main
from vuinspect.frames import Frame
from vuinspect.reproduce.compare import compare, fd_kind
from vuinspect.reproduce.load import read_messages

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
BLK = CAPTURES / "blk.pcapng"
GET_FEATURES, SET_OWNER = 1, 3
RO = 1 << 5  # VIRTIO_BLK_F_RO


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["diff", *map(str, argv)])
    return rc, capsys.readouterr().out


def rewrite(tmp_path: Path, change) -> Path:  # Frame -> Frame | None
    """A copy of blk.pcapng with each frame passed through ``change`` (None drops it)."""
    out = tmp_path / "changed.pcapng"
    with CaptureWriter(str(out)) as w:
        for frame in read_frames(str(BLK)):
            new = change(frame)
            if new is not None:
                w.write(new)
    return out


def header(frame: Frame) -> tuple[int, int, int]:
    return struct.unpack_from("<III", frame.data) if len(frame.data) >= 12 else (0, 0, 0)


def with_ro(frame: Frame) -> Frame:
    """The first GET_FEATURES reply offers VIRTIO_BLK_F_RO too."""
    request, flags, _ = header(frame)
    if frame.kind == "data" and frame.direction == "b2f" and request == GET_FEATURES and flags & 4:
        (features,) = struct.unpack_from("<Q", frame.data, 12)
        with_ro.done = getattr(with_ro, "done", 0) + 1
        if with_ro.done == 1:
            return dataclasses.replace(
                frame, data=frame.data[:12] + struct.pack("<Q", features | RO)
            )
    return frame


def test_same_capture_is_equal(capsys) -> None:
    rc, out = run(capsys, BLK, BLK)
    assert rc == 0
    assert out.strip().endswith("(equal)")
    assert "0 different, 0 missing, 0 unexpected" in out


def test_mutated_reply_names_the_field_and_the_bit(tmp_path, capsys) -> None:
    with_ro.done = 0
    changed = rewrite(tmp_path, with_ro)
    rc, out = run(capsys, BLK, changed)
    assert rc == 1
    lines = [line for line in out.splitlines() if "different" in line or "payload" in line]
    assert lines[0].endswith("GET_FEATURES reply: different"), out
    assert "payload.features: 0x175007e46 -> 0x175007e66  (+RO)" in lines[1], out
    assert out.splitlines()[-1].startswith("43 same, 1 different, 0 missing, 0 unexpected")

    rc, out = run(capsys, BLK, changed, "--json")
    assert rc == 1
    report = json.loads(out)
    assert report["equal"] is False and report["counts"]["different"] == 1
    (entry,) = [e for e in report["entries"] if e["status"] != "same"]
    assert entry["name"] == "GET_FEATURES" and entry["reply"] is True
    assert entry["fields"] == [
        {"field": "payload.features", "a": 0x175007E46, "b": 0x175007E66, "note": "+RO"}
    ]

    rc, out = run(capsys, BLK, changed, "--ignore", "payload.features")
    assert rc == 0, out
    rc, out = run(capsys, BLK, changed, "--ignore", "SET_FEATURES:payload.features")
    assert rc == 1, out  # scoped to another request: still reported


def test_missing_request_resynchronises(tmp_path, capsys) -> None:
    """SET_OWNER dropped from B: one message missing, everything after it still the same."""
    changed = rewrite(tmp_path, lambda f: None if header(f)[0] == SET_OWNER else f)
    rc, out = run(capsys, BLK, changed)
    assert rc == 1
    assert "SET_OWNER: missing" in out
    assert out.splitlines()[-1] == "43 same, 0 different, 1 missing, 0 unexpected"
    rc, out = run(capsys, changed, BLK)
    assert "SET_OWNER: unexpected" in out and rc == 1


def test_blk_vs_net_differs(capsys) -> None:
    rc, out = run(capsys, BLK, CAPTURES / "net.pcapng")
    assert rc == 1
    assert (
        "SET_MEM_TABLE: unexpected" in out
    )  # net maps memory with SET_MEM_TABLE, blk with ADD_MEM_REG
    assert "ADD_MEM_REG: missing" in out


def test_fds_compared_by_role_kind_and_size() -> None:
    assert (
        fd_kind("guest-memory: memfd:memory-backend-memfd size=256MiB")
        == "guest-memory: memfd size=256MiB"
    )
    assert fd_kind("memfd:ram size=1GiB hugetlb") == "memfd size=1GiB hugetlb"
    assert fd_kind("kick: eventfd") == "kick: eventfd"
    assert (
        fd_kind("backend-channel: socket:unix-stream (back-end channel, relayed by vuinspect)")
        == "backend-channel: socket:unix-stream"
    )
    # a role with spaces (REM_MEM_REG's) is a role too
    assert (
        fd_kind("guest-memory (back-end closes it): memfd:ram size=256MiB")
        == "guest-memory (back-end closes it): memfd size=256MiB"
    )
    a = read_messages(str(BLK))
    renamed = [
        dataclasses.replace(m, fds=tuple(d.replace("memory-backend-memfd", "other") for d in m.fds))
        for m in a
    ]
    assert compare(a, renamed).equal
    resized = [
        dataclasses.replace(m, fds=tuple(d.replace("256MiB", "128MiB") for d in m.fds)) for m in a
    ]
    report = compare(a, resized)
    assert [(e.name, [d.field for d in e.diffs]) for e in report.entries if e.status != "same"] == [
        ("ADD_MEM_REG", ["fds"]),
        ("ADD_MEM_REG", ["fds"]),
    ]


def test_not_a_capture(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(b"not a capture")
    assert main(["diff", str(BLK), str(bad)]) == 1
    assert "not a vuinspect capture" in capsys.readouterr().err


def test_damaged_capture_compares_what_is_whole(tmp_path, capsys) -> None:
    cut = tmp_path / "cut.pcapng"
    data = BLK.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc = main(["diff", str(BLK), str(cut)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "capture damaged" in err and "whole frames before it" in err
    assert "missing" in out and "0 different" in out.splitlines()[-1]


def test_config_bytes_named_by_offset(tmp_path, capsys) -> None:
    """GET_CONFIG data as a 4096-byte logical block size export answers it (byte 21: 02 -> 10)."""
    get_config = 24

    def bigger_blocks(frame: Frame) -> Frame:
        request, flags, _ = header(frame)
        if frame.kind == "data" and request == get_config and flags & 4:
            data = bytearray(frame.data)
            data[12 + 12 + 21] = 0x10  # header, offset/size/flags, then virtio_blk_config
            return dataclasses.replace(frame, data=bytes(data))
        return frame

    rc, out = run(capsys, BLK, rewrite(tmp_path, bigger_blocks))
    assert rc == 1
    assert "GET_CONFIG reply: different" in out
    assert "(1 byte(s) differ: [21] 02->10)" in out


def test_array_items_are_named_and_ignored_as_a_filter_names_them() -> None:
    """``payload.regions.1.userspace_addr``, as the filter and the detail tree write it;
    ``--ignore payload.regions.userspace_addr`` ignores it in every region, as a filter on
    ``payload.regions.userspace_addr`` looks at every region."""
    from vuinspect.encode import build
    from vuinspect.pipeline import Pipeline
    from vuinspect.protocol.requests import FrontendRequest

    def mem_table(second_addr: int) -> list:
        regions = [
            {"guest_phys_addr": 0, "memory_size": 4096, "userspace_addr": 0x1000, "mmap_offset": 0},
            {
                "guest_phys_addr": 8192,
                "memory_size": 4096,
                "userspace_addr": second_addr,
                "mmap_offset": 0,
            },
        ]
        data = build("main", FrontendRequest.SET_MEM_TABLE, {"num_regions": 2, "regions": regions})
        fds = ("memfd:ram size=8KiB", "memfd:ram size=8KiB")
        return Pipeline().feed(Frame(1, 1, "main", "f2b", data, fds))

    a, b = mem_table(0x3000), mem_table(0x4000)
    (entry,) = compare(a, b).entries
    assert [d.field for d in entry.diffs] == ["payload.regions.1.userspace_addr"]
    for ignore in ("payload.regions.userspace_addr", "payload.regions.1.userspace_addr", "*addr"):
        assert compare(a, b, [ignore]).equal, ignore
    assert not compare(a, b, ["payload.regions.0.userspace_addr"]).equal


def test_file_errors_are_worded_as_read_words_them(tmp_path, capsys) -> None:
    """diff names a bad file as read does (one wording: vuinspect.errors), escaped."""
    empty = tmp_path / "empty.pcapng"
    empty.write_bytes(b"")
    cut = tmp_path / "cut\x1b[2J.pcapng"
    data = BLK.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    for bad in (tmp_path / "nope.pcapng", tmp_path, empty):
        assert main(["read", str(bad)]) != 0
        said = capsys.readouterr().err.strip().removeprefix("vuinspect read: ")
        assert main(["diff", str(BLK), str(bad)]) == 1
        assert said in capsys.readouterr().err, said
    main(["read", str(cut)])
    said = capsys.readouterr().err.strip().split("; ")[0]
    main(["diff", str(BLK), str(cut)])
    err = capsys.readouterr().err
    assert said.removeprefix("vuinspect read: ") in err and "\x1b" not in err, (said, err)
