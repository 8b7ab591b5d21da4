"""A TUI that stops on an error ends with one line and exit status 1 (tui/launch.py).

Checked for the proxy's viewer process, which the forwarding process reads as
"the TUI ended unexpectedly" (forwarding goes on) only when the status is not 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from vuinspect.tui.samples import demo_frames, write_capture

ROOT = Path(__file__).resolve().parents[2]


def test_the_proxy_viewer_exits_1_with_one_line_when_the_tui_crashes(tmp_path: Path) -> None:
    cap = write_capture(tmp_path / "demo.pcapng", demo_frames())
    script = textwrap.dedent(f"""
        import os, sys, threading
        import vuinspect.tui.rowtext as rowtext
        from vuinspect.cli import main

        def broken(*a, **k):
            raise OverflowError("injected \\x1b[2J")

        rowtext.format_time = broken
        r, w = os.pipe()
        data = open({cap!r}, "rb").read()

        def feed():
            with os.fdopen(w, "wb") as out:
                out.write(data)
                out.flush()
                threading.Event().wait(30)  # the stream stays open: the TUI paints, and fails

        threading.Thread(target=feed, daemon=True).start()
        sys.exit(main(["proxy", "--listen", {str(tmp_path / "l.sock")!r}, "--connect",
                       {str(tmp_path / "c.sock")!r}, "--tui-headless", "--view-fd", str(r)]))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VUINSPECT_TRACEBACK", None)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "the TUI stopped on an error: OverflowError: injected \\x1b[2J" in lines[0]
