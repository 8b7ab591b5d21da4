"""`vuinspect demo`'s closing hint names a command that works as typed in the user's shell."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.demo.command import _self_command


def _entry(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\necho ran "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """cwd = a project dir, PATH without a vuinspect (a clean shell outside the venv)."""
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return project


def _works(command: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-c", f"{command} read x.pcapng"], cwd=cwd, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin"}, timeout=10,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_venv_entry_point_under_cwd_is_named_by_its_relative_path(shell, monkeypatch):
    entry = _entry(shell / ".venv" / "bin" / "vuinspect")
    monkeypatch.setattr(sys, "argv", [str(entry), "demo"])
    assert _self_command() == ".venv/bin/vuinspect"
    assert _works(_self_command(), shell) == "ran read x.pcapng"


def test_python_m_vuinspect_names_the_venvs_entry_point(shell, monkeypatch):
    _entry(shell / ".venv" / "bin" / "vuinspect")
    monkeypatch.setattr(sys, "argv", ["/somewhere/vuinspect/__main__.py", "demo"])
    monkeypatch.setattr(sys, "executable", str(shell / ".venv" / "bin" / "python"))
    assert _self_command() == ".venv/bin/vuinspect"


def test_entry_point_elsewhere_is_named_absolutely(shell, tmp_path, monkeypatch):
    entry = _entry(tmp_path / "other dir" / "bin" / "vuinspect")
    monkeypatch.setattr(sys, "argv", [str(entry), "demo"])
    assert _self_command() == shlex.quote(str(entry))
    assert _works(_self_command(), shell) == "ran read x.pcapng"


def test_without_an_entry_point_python_m_vuinspect(shell, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/somewhere/vuinspect/__main__.py", "demo"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "py" / "python3"))
    assert _self_command() == f"{tmp_path / 'py' / 'python3'} -m vuinspect"


def test_the_bare_name_when_path_finds_this_very_one(shell, tmp_path, monkeypatch):
    entry = _entry(tmp_path / "bin" / "vuinspect")
    monkeypatch.setattr(sys, "argv", [str(entry), "demo"])
    monkeypatch.setenv("PATH", f"{entry.parent}{os.pathsep}/usr/bin:/bin")
    assert _self_command() == "vuinspect"
    other = _entry(tmp_path / "other" / "vuinspect")  # a different vuinspect first on PATH
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{entry.parent}")
    assert _self_command() == shlex.quote(str(entry))
