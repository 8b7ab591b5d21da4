"""vuinspect.wireshark.pyshark_capture: pyshark with our dissector, agreeing with read --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ws_pdml as W

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(300)]
BLK = W.REPO / "captures" / "blk.pcapng"

# pyshark runs in a fresh interpreter, as a user's script would: inside the test process,
# after some earlier tests (test_install's), pyshark reported tshark's exit status as 255
# although tshark itself succeeds (cause not found; seen only in whole-suite runs).
SCRIPT = """
import asyncio, json, sys
import vuinspect.wireshark
loop = asyncio.new_event_loop()  # pyshark needs a loop of its own in this thread
cap = vuinspect.wireshark.pyshark_capture(
    sys.argv[1], eventloop=loop, custom_parameters={"-o": "tcp.analyze_sequence_numbers:TRUE"}
)
try:
    got = [(int(p.number), p.vhost_user.name) for p in cap if "name" in p.vhost_user.field_names]
finally:
    cap.close()
    loop.close()
print(json.dumps(got))
"""


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
        [m["frame"], m["name"]] for m in map(json.loads, out.splitlines()) if m["kind"] == "message"
    ]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(BLK)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert want and got == want
    assert list((tmp_path / ".cache" / "vuinspect").glob("vhost_user.*.lua"))
