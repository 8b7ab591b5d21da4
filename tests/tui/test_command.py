"""``vuinspect view``: argument errors are one line, no traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.errors import CliError
from vuinspect.tui import command


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", "view", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    out = run_cli(str(tmp_path / "nope.pcapng"))
    assert out.returncode == 1
    assert out.stderr.startswith("vuinspect view: cannot open capture")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_not_a_capture(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello, this is not pcapng\n" * 10)
    out = run_cli(str(junk))
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_bad_filter_is_refused_before_the_ui(demo_path: Path) -> None:
    p = argparse.ArgumentParser()
    command.configure(p)
    args = p.parse_args([str(demo_path), "--filter", "conn =="])
    with pytest.raises(CliError, match="bad --filter"):
        command.run(args)


def test_help_lists_the_options() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for opt in ("--filter", "--device", "--follow"):
        assert opt in out.stdout
