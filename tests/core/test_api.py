"""The Python API: vuinspect.open() yields what `read --json` prints."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vuinspect
from vuinspect.capture import CaptureError
from vuinspect.filter import FilterError
from vuinspect.samples import device_start

ROOT = Path(__file__).resolve().parents[2]


def read_json(*args: str) -> list[dict]:
    r = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", *args],
        capture_output=True,
        timeout=60,
        text=True,
    )
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_to_dict_is_the_ndjson_object(device_start_capture):
    msgs = list(vuinspect.open(str(device_start_capture)))
    assert len(msgs) == len(device_start())
    assert [m.to_dict() for m in msgs] == read_json(str(device_start_capture))
    req = next(m for m in msgs if m.name == "GET_VRING_BASE" and not m.reply)
    assert req.reply_in is not None  # linked before it is yielded, as read prints it
    assert req.reply is False and req.to_dict()["direction"] == "f2b"


def test_filter_file_object_and_device(device_start_capture):
    expr = "name == GET_VRING_BASE"
    got = [m.to_dict() for m in vuinspect.open(str(device_start_capture), filter=expr)]
    assert got and got == read_json("-f", expr, str(device_start_capture))
    with open(device_start_capture, "rb") as f:
        assert [m.to_dict() for m in vuinspect.open(f, "reply")] == read_json(
            "-f", "reply", str(device_start_capture)
        )
    assert list(vuinspect.open(io.BytesIO(device_start_capture.read_bytes()), device="net"))


def test_bad_filter_raises_at_once(device_start_capture):
    with pytest.raises(FilterError, match="did you mean SET_MEM_TABLE"):
        vuinspect.open(str(device_start_capture), filter="name == SET_MEM_TABL")


def test_damaged_capture_yields_whole_messages_then_raises(device_start_capture, tmp_path):
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(device_start_capture.read_bytes()[:-30])
    got = []
    with pytest.raises(CaptureError):
        for m in vuinspect.open(str(cut)):
            got.append(m)
    assert len(got) == len(device_start()) - 1


def test_readme_scripting_example_runs():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### Scripting\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has a Scripting section with a python example"
    r = subprocess.run(
        [sys.executable, "-c", block.group(1)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def test_several_files_as_one_capture(device_start_capture, tmp_path):
    again = tmp_path / "again.pcapng"
    again.write_bytes(device_start_capture.read_bytes())
    msgs = list(vuinspect.open([device_start_capture, again]))
    assert len(msgs) == 2 * len(device_start())
    assert sorted({m.conn for m in msgs}) == [1, 2]
    assert [m.to_dict() for m in msgs] == read_json(str(device_start_capture), str(again))
