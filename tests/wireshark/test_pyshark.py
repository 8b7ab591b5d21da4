"""vuinspect.wireshark.pyshark_capture: pyshark with our dissector, agreeing with read --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ws_pdml as W

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(300)]
BLK = W.REPO / "captures" / "blk.pcapng"
PARALLEL = 12

# pyshark runs in fresh interpreters, as a user's script would, a dozen at once: with a
# caller's own event loop, asyncio's threaded child watcher lost tshark's exit status to the
# transport's poll() under load (2-4 of 12 runs raised TSharkCrashException on close()).
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
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(BLK)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PARALLEL)
    ]
    try:
        for run in runs:
            stdout, stderr = run.communicate(timeout=120)
            assert run.returncode == 0, stderr
            got = json.loads(stdout.splitlines()[-1])
            assert want and got == want
    finally:
        for run in runs:
            run.kill()
            run.wait()
    assert list((tmp_path / ".cache" / "vuinspect").glob("vhost_user.*.lua"))
