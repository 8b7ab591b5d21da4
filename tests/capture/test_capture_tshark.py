"""Real tshark reads our captures: ns timestamps, interfaces, directions, unshifted payload."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from capture_samples import mixed_frames

from vuinspect.capture import CaptureWriter
from vuinspect.capture.pseudohdr import encode

TSHARK = shutil.which("tshark")
pytestmark = [
    pytest.mark.tshark,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        TSHARK is None, reason="tshark is not installed (scripts/install-system-deps.sh)"
    ),
]

FIELDS = [
    "frame.time_epoch",
    "frame.protocols",
    "exported_pdu.prot_name",
    "exported_pdu.exported_pdu",
    "frame.interface_name",
    "frame.interface_description",
    "frame.packet_flags_direction",
    "_ws.malformed",
    "_ws.expert",
]


def tshark_fields(path, *extra):
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for field in FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd + list(extra), capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


def ns_text(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


@pytest.mark.parametrize("big_endian", [False, True])
def test_tshark_sees_our_frames_exactly(tmp_path, big_endian):
    frames = mixed_frames()
    path = tmp_path / "c.pcapng"
    with CaptureWriter(path, big_endian=big_endian) as w:
        for f in frames:
            w.write(f)
    rows = tshark_fields(path)
    assert len(rows) == len(frames)
    for frame, (
        epoch,
        protocols,
        prot_name,
        pdu,
        if_name,
        if_desc,
        direction,
        malformed,
        expert,
    ) in zip(frames, rows, strict=True):
        assert epoch == ns_text(frame.ts_ns)
        assert protocols.startswith("exported_pdu")
        assert prot_name == "vhost_user"
        # the payload Wireshark hands to the dissector starts exactly at our pseudo-header
        assert bytes.fromhex(pdu.replace(":", "")) == encode(frame, big_endian)
        channel = frame.channel if frame.kind == "data" else "main"
        assert if_desc == f"conn {frame.conn} {channel}"
        assert if_name  # label or "conn N"
        assert int(direction, 16) == (1 if frame.direction == "f2b" else 2)
        assert malformed == "" and expert == ""
    assert rows[0][4] == "conn 7" and rows[1][4] == "/run/vhost/blk0.sock"


def test_tshark_hands_the_packet_to_a_vhost_user_dissector(tmp_path):
    """A stand-in Lua dissector named vhost_user reads our magic at offset 0 of what it gets."""
    lua = tmp_path / "stand_in.lua"
    lua.write_text(
        'local p = Proto("vhost_user", "vhost-user stand-in")\n'
        'local f_magic = ProtoField.string("vhost_user.magic", "Magic")\n'
        'local f_conn = ProtoField.uint32("vhost_user.conn", "Conn")\n'
        "p.fields = {f_magic, f_conn}\n"
        "function p.dissector(tvb, pinfo, tree)\n"
        "  local t = tree:add(p, tvb())\n"
        "  t:add(f_magic, tvb(0, 2))\n"
        "  t:add(f_conn, tvb(8, 4))\n"
        "end\n"
    )
    frames = mixed_frames()
    path = tmp_path / "c.pcapng"
    with CaptureWriter(path) as w:
        for f in frames:
            w.write(f)
    cmd = [
        TSHARK,
        "-n",
        "-r",
        str(path),
        "-X",
        f"lua_script:{lua}",
        "-T",
        "fields",
        "-e",
        "frame.protocols",
        "-e",
        "vhost_user.magic",
        "-e",
        "vhost_user.conn",
        "-e",
        "_ws.malformed",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert rows == [["exported_pdu:vhost_user", "VU", str(f.conn), ""] for f in frames]


def test_capinfos_reports_nanoseconds_and_upper_pdu(tmp_path):
    capinfos = shutil.which("capinfos")
    if capinfos is None:
        pytest.skip("capinfos is not installed")
    path = tmp_path / "c.pcapng"
    with CaptureWriter(path) as w:
        for f in mixed_frames():
            w.write(f)
    out = subprocess.run([capinfos, "-M", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "wireshark-upper-pdu" in out.stdout.lower() or "upper pdu" in out.stdout.lower()
    assert "nanoseconds" in out.stdout
