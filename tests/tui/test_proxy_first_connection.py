"""`vuinspect proxy` in a real terminal (tmux), as a newcomer runs it: the empty TUI says
where it listens, and the first connection's rows scroll into view (follow mode), the
newest (CLOSE) on the list's last line.  The engine, its viewer child reading the pcapng
stream, the in-repo back-end and front-end are the real processes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import sockdir  # noqa: F401 - the fixture
from vuinspect.testing.procs import backend_args, proxy_command, stop, wait_path

from .test_terminal import ROOT, Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


@pytest.fixture
def backend(sockdir: str) -> Iterator[str]:  # noqa: F811 - the fixture
    path = os.path.join(sockdir, "be.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", *backend_args(path)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_path(path, proc)
        yield path
    finally:
        stop(proc, check=False)
        if proc.stderr is not None:
            proc.stderr.close()


def _rows(screen: str) -> list[str]:
    """The message list's rows: between the column header and the pane separator."""
    lines = screen.splitlines()
    top = next(i for i, line in enumerate(lines) if "No." in line and "Message" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("──"))
    return [line for line in lines[top + 1 : end] if line.strip()]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", [(80, 24), (120, 35)], ids=["80x24", "120x35"])
def test_the_proxy_tui_waits_visibly_then_follows_its_first_connection(
    sockdir: str,  # noqa: F811 - the fixture
    backend: str,
    tmp_path: Path,
    size: tuple[int, int],
) -> None:
    listen = os.path.join(sockdir, "vu.sock")
    tmux = Tmux(f"vuinspect-first-{tmp_path.name}")
    try:
        tmux(
            "new-session", "-d", "-s", "t", "-x", str(size[0]), "-y", str(size[1]),
            "-c", str(ROOT),
            f"{shlex.join(proxy_command(listen, backend, quiet=False, no_tui=False))}; sleep 30",
        )  # fmt: skip
        screen = tmux.wait_for(lambda s: "waiting for a connection on" in s)
        assert f"listening on {listen}" in screen.splitlines()[0], screen
        assert f"waiting for a connection on {listen}" in screen, screen
        subprocess.run(
            [sys.executable, "-m", "vuinspect.testing.frontend", "--connect", listen]
            + ["--rounds", "10", "--warmup", "0"],
            check=True,
            capture_output=True,
            timeout=30,
            cwd=ROOT,
        )
        screen = tmux.wait_for(lambda s: "CLOSE" in s and " frames" in s.splitlines()[0])
        counted = re.search(r"([\d,]+) frames", screen.splitlines()[0])
        assert counted, screen
        total = int(counted.group(1).replace(",", ""))
        rows = _rows(screen)
        assert rows[-1].split()[0] == str(total) and "CLOSE" in rows[-1], screen
        assert rows[0].split()[0] != "1", screen  # scrolled: the first frames are above
        assert "LIVE  follow" in screen.splitlines()[0], screen
        tmux("send-keys", "-t", "t", "q")
        tmux.wait_for(lambda s: "listening on" in s and "LIVE" not in s)  # back in the shell
    finally:
        tmux("kill-server")
