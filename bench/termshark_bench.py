"""termshark on the same big capture: first paint, reaching the last row, peak RSS.

termshark is what people reach for to browse a capture in a terminal; it drives
tshark, so with our dissector in the personal plugin folder it shows the same
messages.  It runs in a detached tmux pane (160x50, as the TUI benchmark) with
a throwaway HOME holding only ``~/.local/lib/wireshark/plugins/vhost_user.lua``;
the pane is read with ``tmux capture-pane`` every 50 ms.  "Last row" is sending
``G`` (termshark's jump to the end, repeated each second because it only jumps
to what is loaded so far) until the capture's last frame number is on screen.
RSS is the sum over termshark and its tshark children, sampled with the pane;
past half the machine's memory the run is stopped (and says so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

from .common import process_tree

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(os.path.dirname(HERE), "dissectors", "vhost_user.lua")


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in KiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def _kill_session(sid: int) -> None:
    """SIGKILL what is left of the pane's session (tmux makes each pane a session leader)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry}/stat") as f,
            ):
                if int(f.read().rsplit(")", 1)[1].split()[3]) == sid:
                    os.kill(int(entry), signal.SIGKILL)


def _has_row(screen: str, number: int) -> bool:
    prefix = f" {number} "
    return any(line.startswith(prefix) for line in screen.splitlines())


def run(path: str, frames: int, first_text: str = "GET_FEATURES", timeout: float = 600) -> dict:
    """Measure termshark on ``path`` (``frames`` frames); ``timeout`` bounds the whole run."""
    missing = [t for t in ("termshark", "tmux", "tshark") if not shutil.which(t)]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)}"}
    out: dict = {"timeout_s": timeout}
    with tempfile.TemporaryDirectory(prefix="vubench-tshark.", dir="/tmp") as home:
        plugins = os.path.join(home, ".local", "lib", "wireshark", "plugins")
        os.makedirs(plugins)
        shutil.copy(LUA, plugins)
        tmux = ["tmux", "-L", f"vubench{os.getpid()}", "-f", "/dev/null"]
        env = dict(
            os.environ,
            HOME=home,
            XDG_CONFIG_HOME=os.path.join(home, ".config"),
            XDG_CACHE_HOME=os.path.join(home, ".cache"),
            TERM="xterm-256color",
        )
        t0 = time.perf_counter()
        subprocess.run(
            [
                *tmux,
                "new-session",
                "-d",
                "-s",
                "b",
                "-x",
                "160",
                "-y",
                "50",
                f"exec termshark -r {path}",
            ],
            env=env,
            check=True,
        )
        try:
            pid = int(
                subprocess.run(
                    [*tmux, "list-panes", "-t", "b", "-F", "#{pane_pid}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[0]
            )
            peak = 0
            last_g = 0.0
            cap_kb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2048
            while time.perf_counter() - t0 < timeout:
                screen = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True
                ).stdout
                peak = max(peak, _tree_rss_kb(pid))
                now = time.perf_counter() - t0
                if "first_paint_s" not in out and first_text in screen:
                    out["first_paint_s"] = round(now, 2)
                    out["rss_at_first_paint_mb"] = round(peak / 1024, 1)
                if peak > cap_kb:
                    out["stopped"] = f"RSS passed {cap_kb // 1024} MB (half this machine's memory)"
                    break
                if "first_paint_s" in out:
                    if _has_row(screen, frames):
                        out["last_row_s"] = round(now, 2)
                        break
                    if now - last_g >= 1.0:
                        subprocess.run([*tmux, "send-keys", "-t", "b", "G"])
                        last_g = now
                time.sleep(0.05)
            else:
                out["stopped"] = f"last row not on screen within {timeout:.0f} s"
            out["peak_rss_mb"] = round(peak / 1024, 1)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
            _kill_session(pid)
    return out
