"""vuinspect.wireshark.pyshark_capture: pyshark with our dissector, agreeing with read --json."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import ws_pdml as W

import vuinspect.wireshark

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(300)]
BLK = W.REPO / "captures" / "blk.pcapng"


def test_names_and_frames_agree_with_read_json(tmp_path, monkeypatch):
    pytest.importorskip("pyshark")
    monkeypatch.setenv("HOME", str(tmp_path))  # no installed copy of the dissector
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", str(BLK)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    want = [
        (m["frame"], m["name"]) for m in map(json.loads, out.splitlines()) if m["kind"] == "message"
    ]
    loop = asyncio.new_event_loop()  # pyshark needs a loop of its own in this thread
    cap = vuinspect.wireshark.pyshark_capture(
        BLK, eventloop=loop, custom_parameters={"-o": "tcp.analyze_sequence_numbers:TRUE"}
    )
    try:
        got = [
            (int(pkt.number), pkt.vhost_user.name)
            for pkt in cap
            if "name" in pkt.vhost_user.field_names
        ]
    finally:
        cap.close()
        loop.close()
    assert want and got == want
    assert list((tmp_path / ".cache" / "vuinspect").glob("vhost_user.*.lua"))
