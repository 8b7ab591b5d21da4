"""`vuinspect read`: text, NDJSON, stats, filters, damaged and foreign input."""

from __future__ import annotations

import json
import subprocess
import sys

from vuinspect.capture import read_frames
from vuinspect.protocol import requests
from vuinspect.samples import PROTOCOL_ACK, device_start


def vuinspect(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", *args], input=stdin, capture_output=True, timeout=60
    )


def test_json_pairs_every_reply_names_bits_lists_fds(device_start_capture):
    r = vuinspect("read", "--json", str(device_start_capture))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    keys = {
        "frame",
        "ts",
        "conn",
        "channel",
        "direction",
        "request",
        "name",
        "reply",
        "flags",
        "size",
        "fds",
        "payload",
        "reply_to",
        "reply_in",
        "latency_us",
        "problems",
        "severity",
    }
    assert all(keys <= row.keys() for row in rows)
    by_frame = {row["frame"]: row for row in rows}
    messages = [row for row in rows if row["kind"] == "message"]
    replies = [row for row in messages if row["reply"]]
    requests_ = [row for row in messages if not row["reply"]]
    # every request that wanted a reply got one, and every reply points at its request
    for row in requests_:
        spec = requests.lookup(row["channel"], row["request"])
        wants = spec.reply_mode == "always" or row["need_reply"]
        assert wants == (row["reply_in"] is not None), row
        if wants:
            assert by_frame[row["reply_in"]]["reply_to"] == row["frame"]
    for row in replies:
        req = by_frame[row["reply_to"]]
        assert req["request"] == row["request"] and not req["reply"]
        assert row["latency_us"] == (row["ts_ns"] - req["ts_ns"]) / 1000
    assert len(replies) == sum(
        1
        for row in requests_
        if requests.lookup(row["channel"], row["request"]).reply_mode == "always"
        or row["need_reply"]
    )
    # feature bits by name
    get_features = next(r for r in replies if r["name"] == "GET_FEATURES")
    assert "VERSION_1" in get_features["payload"]["features_names"]
    assert "FLUSH" in get_features["payload"]["features_names"]  # blk device bits
    set_pf = next(r for r in requests_ if r["name"] == "SET_PROTOCOL_FEATURES")
    assert set_pf["payload"]["features"] == PROTOCOL_ACK
    assert "REPLY_ACK" in set_pf["payload"]["features_names"]
    # every fd listed, with its role
    sent = sum(len(f.fds) for f in device_start())
    assert sum(len(row["fds"]) for row in rows) == sent
    mem = next(r for r in requests_ if r["name"] == "SET_MEM_TABLE")
    assert mem["fds"] == ["guest-memory: memfd:mem size=256MiB"] * 2
    kick = next(r for r in requests_ if r["name"] == "SET_VRING_KICK")
    assert kick["fds"] == ["kick: eventfd"]
    assert all(row["problems"] == [] for row in rows)


def test_text_lines_and_filter(device_start_capture):
    r = vuinspect("read", "--filter", "name == GET_VRING_BASE", str(device_start_capture))
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 4
    assert "GET_VRING_BASE reply vring 0 base=37" in lines[1]
    assert "µs" in lines[1]


def test_stats(device_start_capture):
    r = vuinspect("read", "--stats", str(device_start_capture))
    out = r.stdout.decode()
    assert r.returncode == 0
    assert "SET_VRING_ENABLE" in out and "/run/vhost/blk0.sock" in out
    r = vuinspect("read", "--stats", "--json", str(device_start_capture))
    stats = json.loads(r.stdout)
    row = next(x for x in stats["requests"] if x["name"] == "SET_VRING_ENABLE")
    assert row["requests"] == 4 and row["replies"] == 4
    assert row["latency_us"]["p50"] == 25.0 and row["latency_us"]["n"] == 4
    conn = stats["connections"][0]
    assert conn["close_reason"] == "front-end closed the connection" == conn["closed"]  # alias


def test_stdin(device_start_capture):
    r = vuinspect("read", "-", stdin=device_start_capture.read_bytes())
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(
        list(read_frames(str(device_start_capture)))
    )


def test_truncated_capture_keeps_whole_messages(device_start_capture, tmp_path):
    data = device_start_capture.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-30])
    r = vuinspect("read", str(cut))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "capture damaged at byte" in err and "Traceback" not in err
    assert len(r.stdout.splitlines()) == len(device_start()) - 1


def test_bad_inputs_give_one_clear_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for args, needle in (
        (["read", str(tmp_path / "missing.pcapng")], "no such file"),
        (["read", str(text)], "not a vuinspect capture"),
        (["read", str(tmp_path)], "is a directory"),
        (["read", "--filter", "nme == 1", str(text)], "bad filter"),
    ):
        r = vuinspect(*args)
        err = r.stderr.decode()
        assert r.returncode != 0 and needle in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1


def test_frame_comments_are_shown_kept_in_json_and_filtered(tmp_path):
    """pcapng frame comments (editcap -a, or the TUI's c) reach read's lines, NDJSON and filters."""
    import shutil

    import pytest

    if shutil.which("editcap") is None:
        pytest.skip("editcap not installed")
    from pathlib import Path

    blk = Path(__file__).resolve().parents[2] / "captures" / "blk.pcapng"
    out = tmp_path / "commented.pcapng"
    subprocess.run(
        ["editcap", "-a", "5:look \x1b[2J here", str(blk), str(out)],
        check=True,
        capture_output=True,
    )
    lines = vuinspect("read", str(out)).stdout.decode().splitlines()
    assert lines[4].endswith("  # look \\x1b[2J here") and "\x1b" not in lines[4]
    assert not any("#" in line for i, line in enumerate(lines) if i != 4)
    rows = [json.loads(line) for line in vuinspect("read", "--json", str(out)).stdout.splitlines()]
    assert [r["frame"] for r in rows if r["comment"]] == [5]
    assert rows[4]["comment"] == "look \x1b[2J here"
    hit = vuinspect("read", "-T", "fields", "-e", "frame", "-f", "comment ~ look", str(out))
    assert hit.stdout.decode().split() == ["5"]


def test_fields_output_escapes_what_the_capture_chose(tmp_path):
    """-T fields: a label or fd text from the capture cannot drive the terminal."""
    from vuinspect.capture import CaptureWriter
    from vuinspect.encode import build
    from vuinspect.frames import Frame, event_frame

    path = tmp_path / "esc.pcapng"
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        w.write(event_frame("open", 10, 1, {"label": "a\x1b[31mb\tc\\d\x07"}))
        w.write(Frame(20, 1, "main", "f2b", build("main", 1, None), ("memfd:\x1b]0;t\x07",)))
        w.close()
    r = vuinspect("read", "-T", "fields", "-e", "payload.label", "-e", "fds", str(path))
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout
    assert r.stdout.decode().splitlines() == [
        "a\\x1b[31mb\\tc\\\\d\\x07\t",
        "\tmemfd:\\x1b]0;t\\x07",
    ]
