"""The TUI in a real terminal (tmux): what you type is on screen; a crash is one line and exit 1.

Pilot runs Textual headless; this drives the real driver, key parser and
terminal (issue 12 item 1, issue 11 item 6).  Sessions live on a private tmux
server socket and are killed at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")

ROOT = Path(__file__).resolve().parents[2]


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, cond: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if cond(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never matched:\n{text}")
            time.sleep(0.1)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"vuinspect-test-{tmp_path.name}")
    yield t
    t("kill-server")


def _start(tmux: Tmux, tmp_path: Path, script: str) -> None:
    (tmp_path / "run.py").write_text(script)
    tmux(
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "80",
        "-y",
        "24",
        "-c",
        str(ROOT),
        f"{sys.executable} {tmp_path / 'run.py'}; sleep 30",
    )


def test_typed_filter_is_seen_in_a_real_terminal(
    tmux: Tmux, demo_path: Path, tmp_path: Path
) -> None:
    rc = tmp_path / "rc"
    _start(
        tmux,
        tmp_path,
        f"""
from vuinspect.cli import main
rc = main(["view", {str(demo_path)!r}])
open({str(rc)!r}, "w").write(str(rc))
""",
    )
    tmux.wait_for(lambda s: "91 frames" in s and "GET_FEATURES" in s)
    tmux("send-keys", "-t", "t", "f")
    tmux.wait_for(lambda s: "Complete" in s.splitlines()[-1])  # the footer: the filter has focus
    tmux("send-keys", "-t", "t", "-l", "name == SET_MEM")
    screen = tmux.wait_for(
        lambda s: (
            s.splitlines()[1].strip() == "name == SET_MEM_TABLE"
            or s.splitlines()[1].strip() == "name == SET_MEM"
        )
    )
    # the typed text on the filter row (the rest of a name may show as a suggestion)
    assert screen.splitlines()[1].strip().startswith("name == SET_MEM"), screen
    tmux("send-keys", "-t", "t", "Tab")
    tmux("send-keys", "-t", "t", "-l", "m3")  # after Tab: still typed into the filter
    screen = tmux.wait_for(lambda s: s.splitlines()[1].strip() == "name == SET_MEM_TABLE m3")
    assert "[3 Connections]" not in screen
    tmux("send-keys", "-t", "t", "Escape")
    tmux.wait_for(lambda s: "Quit" in s.splitlines()[-1])  # back on the list
    tmux("send-keys", "-t", "t", "q")
    deadline = time.monotonic() + 60  # a loaded CI machine: generous, the usual is < 1 s
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rc.exists() and rc.read_text() == "0", tmux.screen()


def test_a_crash_exits_1_with_one_line(tmux: Tmux, demo_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _start(
        tmux,
        tmp_path,
        f"""
import contextlib, io
import vuinspect.tui.rowtext as rowtext
from vuinspect.cli import main

def broken(*a, **k):
    raise OverflowError("injected \\x1b[2J")

rowtext.format_time = broken
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(["view", {str(demo_path)!r}])
open({str(out)!r}, "w").write(f"{{rc}}\\n{{err.getvalue()}}")
""",
    )
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    rc, _, err = out.read_text().partition("\n")
    assert rc == "1"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "the TUI stopped on an error: OverflowError: injected \\x1b[2J" in lines[0]


def test_esc_then_q_from_help_quits_in_a_real_terminal(
    tmux: Tmux, demo_path: Path, tmp_path: Path
) -> None:
    """Esc and q typed fast reach Textual as one alt+q: still one q, still a quit."""
    rc = tmp_path / "rc"
    _start(
        tmux,
        tmp_path,
        f"""
from vuinspect.cli import main
rc = main(["view", {str(demo_path)!r}])
open({str(rc)!r}, "w").write(str(rc))
""",
    )
    tmux.wait_for(lambda s: "91 frames" in s and "GET_FEATURES" in s)
    tmux("send-keys", "-t", "t", "Enter")
    tmux.wait_for(lambda s: "Quit" in s.splitlines()[-1])
    tmux("send-keys", "-t", "t", "?")
    tmux.wait_for(lambda s: "vuinspect keys" in s)
    tmux("send-keys", "-t", "t", "Escape", "q")
    deadline = time.monotonic() + 60  # a loaded CI machine: generous, the usual is < 1 s
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rc.exists() and rc.read_text() == "0", tmux.screen()
