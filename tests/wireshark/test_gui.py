"""The real Wireshark GUI (Qt) under Xvfb with the dissector from `vuinspect install-dissector`.

One Wireshark run per module (HOME, XDG dirs and the X display are temporary, so the
user's setup is never touched): it opens captures/blk.pcapng filtered to the memory-table
messages, and the tests check what a person would see: no Lua error dialog or stderr line,
the decoded ADD_MEM_REG tree (read back from a screenshot with tesseract), and the
vhost-user statistics entry in the menus, which opens its window when clicked.
``VUINSPECT_SCREENSHOTS=1`` also writes the screenshot to docs/screenshots/wireshark.png.
Skipped only when the wireshark binary is missing (CI installs it with the other tools).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vuinspect.testing.procs import stop

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "captures" / "blk.pcapng"
DOC_SHOT = ROOT / "docs" / "screenshots" / "wireshark.png"
TOOLS = ("wireshark", "Xvfb", "xdotool", "import", "convert", "tesseract")
FILTER = 'vhost_user.name == "ADD_MEM_REG" || vhost_user.name == "SET_MEM_TABLE"'
WIDTH, HEIGHT = 1280, 720
# Wireshark's "recent" file in the temporary profile: the window fills the screen, a short
# packet list, no bytes pane, so the details tree has the room.
RECENT = (
    f"gui.geometry_main_x: 0\ngui.geometry_main_y: 0\ngui.geometry_main_width: {WIDTH}\n"
    f"gui.geometry_main_height: {HEIGHT}\ngui.geometry_main_maximized: FALSE\n"
    "gui.geometry_main_upper_pane: 150\ngui.byte_view_show: FALSE\n"
)

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.timeout(150),
    pytest.mark.skipif(shutil.which("wireshark") is None, reason="wireshark is not installed"),
]


@dataclass
class Gui:
    env: dict[str, str]
    home: Path
    main: str
    stderr: Path
    shots: Path

    def run(self, *args: str, timeout: float = 20) -> str:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        return proc.stdout

    def key(self, *keys: str) -> None:
        self.run("xdotool", "windowfocus", "--sync", self.main)
        for k in keys:
            self.run("xdotool", "key", "--window", self.main, k)
            time.sleep(0.3)

    def shot(self, name: str) -> Path:
        path = self.shots / name
        self.run("import", "-window", "root", str(path), timeout=30)
        assert path.is_file(), f"no screenshot {path}"
        return path

    def words(self, image: Path) -> list[tuple[str, int, int]]:
        """(word, x, y) of every word tesseract reads, (x, y) its centre."""
        tsv = self.run("tesseract", str(image), "-", "--psm", "11", "tsv", timeout=60)
        out = []
        for line in tsv.splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) == 12 and cols[11].strip():
                left, top, w, h = (int(c) for c in cols[6:10])
                out.append((cols[11].strip(), left + w // 2, top + h // 2))
        return out

    def status(self, name: str) -> str:
        """The status bar's text, read from a 3x crop of the screen's bottom line."""
        full = self.shot(name)
        crop = self.shots / f"status-{name}"
        self.run(
            "convert",
            str(full),
            "-crop",
            f"{WIDTH}x24+0+{HEIGHT - 24}",
            "+repage",
            "-scale",
            "300%",
            str(crop),
            timeout=30,
        )
        return self.run("tesseract", str(crop), "-", "--psm", "7", timeout=60).strip()

    def visible(self) -> list[tuple[str, str]]:
        """(id, title) of every visible top-level Wireshark window."""
        ids = self.run("xdotool", "search", "--onlyvisible", "--class", "wireshark").split()
        return [(i, self.run("xdotool", "getwindowname", i).strip()) for i in ids]


def _norm(text: str) -> str:
    """Letters and digits only, upper case: OCR reads "_" and spaces in monospace text loosely."""
    return re.sub(r"[^A-Za-z0-9]", "", text).upper()


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        stop(proc, timeout=5, check=False)


def _wait_for(gui: Gui, pattern: str, timeout: float, allowed: str = "") -> str:
    """The id of a visible window whose title matches; "" at the timeout, or at once when
    ``allowed`` is given and another window shows up (an error dialog)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for wid, title in gui.visible():
            if re.search(pattern, title):
                return wid
            if allowed and not re.search(allowed, title):
                time.sleep(1.0)  # let the dialog draw for the failure's screen text
                return ""
        time.sleep(0.5)
    return ""


@pytest.fixture(scope="module")
def gui(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"install {missing} (scripts/install-system-deps.sh does)"
    base = tmp_path_factory.mktemp("wsgui")
    home, runtime, shots = base / "home", base / "run", base / "shots"
    for d in (home, runtime, shots):
        d.mkdir(mode=0o700)
    env = dict(
        os.environ,
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_RUNTIME_DIR=str(runtime),
        LC_ALL="C.UTF-8",
        QT_QPA_PLATFORM="xcb",
    )
    env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vuinspect", "install-dissector"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (home / ".local/lib/wireshark/plugins/vhost_user.lua").is_file(), proc.stdout
    (home / ".config/wireshark").mkdir(parents=True, exist_ok=True)
    (home / ".config/wireshark/recent").write_text(RECENT)

    read_fd, write_fd = os.pipe()
    xvfb = wireshark = None
    try:
        xvfb = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                f"{WIDTH}x{HEIGHT}x24",
                "-nolisten",
                "tcp",
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        write_fd = -1
        with os.fdopen(read_fd, "r") as r:
            display = r.readline().strip()
        assert display, "Xvfb did not start"
        env["DISPLAY"] = f":{display}"
        stderr = base / "wireshark.stderr"
        with stderr.open("w") as err:
            wireshark = subprocess.Popen(
                ["wireshark", "-r", str(CAPTURE), "-Y", FILTER],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=base,
            )
        g = Gui(env, home, "", stderr, shots)
        g.main = _wait_for(g, r"^blk\.pcapng$", 60, allowed=r"^The Wireshark Network Analyzer$")
        assert g.main, (
            f"Wireshark did not show blk.pcapng; windows {g.visible()}, "
            f"stderr {stderr.read_text()!r}; on screen: {_screen_text(g)!r}"
        )
        time.sleep(1.5)
        yield g
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        _stop(wireshark)
        _stop(xvfb)


def _screen_text(gui: Gui) -> str:
    try:
        return " ".join(w for w, _, _ in gui.words(gui.shot("failure.png")))
    except (OSError, AssertionError, subprocess.TimeoutExpired):
        return ""


def test_no_lua_error(gui):
    """A Lua error while loading the plugin opens a modal dialog (and blocks the file)."""
    others = [(i, t) for i, t in gui.visible() if i != gui.main]
    assert not others, f"extra windows {others}: {_screen_text(gui)!r}"
    err = gui.stderr.read_text(errors="replace")
    bad = [ln for ln in err.splitlines() if re.search(r"lua|vhost", ln, re.I)]
    assert not bad, err


def test_screenshot_shows_add_mem_reg_tree(gui):
    """The first ADD_MEM_REG selected, its vhost-user tree expanded: the region's fields."""
    status = gui.status("before.png")
    assert "Displayed: 4 " in status, f"the filter should show the 4 ADD_MEM_REG: {status!r}"
    words = gui.words(gui.shots / "before.png")
    rows = [(y, x) for w, x, y in words if "vhost-user:" in w]
    assert rows, f"no vhost-user row in the details: {words}"
    y, x = max(rows)
    gui.run("xdotool", "mousemove", "--sync", str(x), str(y), "click", "1")
    gui.key("Right")
    time.sleep(1.0)
    shot = gui.shot("wireshark.png")
    text = _norm(" ".join(w for w, _, _ in gui.words(shot)))
    assert "VHOSTUSERADDMEMREG" in text, text
    assert "LUAERROR" not in text and "MALFORMED" not in text, text
    # the expanded tree: the region's fields, not only the summary line
    for field in ("Guest phys addr", "Memory size", "Userspace addr", "Mmap offset", "Reply in"):
        assert _norm(field) in text, (field, text)
    if os.environ.get("VUINSPECT_SCREENSHOTS"):
        shutil.copyfile(shot, DOC_SHOT)


def test_no_frame_has_a_lua_error(gui):
    """Typed into the display filter bar: no frame of the capture has a Lua error or is malformed."""
    gui.key("ctrl+slash", "ctrl+a")
    gui.run(
        "xdotool",
        "type",
        "--delay",
        "20",
        "_ws.lua.error || _ws.malformed || _ws.expert.severity == error",
    )
    gui.key("Return")
    time.sleep(1.5)
    status = gui.status("lua-errors.png")
    assert "Packets: 47 " in status and "Displayed: 0 " in status, status


def _popups(gui: Gui, known: set[str]) -> list[tuple[str, int, int]]:
    """Words of the open popup menus (windows not in ``known``), in screen coordinates."""
    out = []
    for wid, _title in gui.visible():
        if wid in known:
            continue
        geo = gui.run("xdotool", "getwindowgeometry", "--shell", wid)
        pos = dict(ln.split("=", 1) for ln in geo.split() if "=" in ln)
        path = gui.shots / f"popup-{wid}.png"
        gui.run("import", "-window", wid, str(path), timeout=30)
        if path.is_file():
            out += [(w, int(pos["X"]) + x, int(pos["Y"]) + y) for w, x, y in gui.words(path)]
    return out


def _find(words: list[tuple[str, int, int]], pattern: str, right_of: int = -1):
    for w, x, y in words:
        if x > right_of and re.search(pattern, w, re.I):
            return x, y
    return None


def test_statistics_menu_entry_opens_its_window(gui):
    """Statistics (or Tools) has a vhost-user entry; clicking it opens the statistics window."""
    seen = []
    base = {gui.main}
    for menu in ("alt+s", "alt+t"):
        gui.key("Escape", "Escape", menu)
        time.sleep(1.0)
        words = _popups(gui, base)
        seen.append(" ".join(w for w, _, _ in words))
        at = _find(words, r"vhost")
        if at is None:
            continue
        gui.run("xdotool", "mousemove", "--sync", str(at[0]), str(at[1]), "click", "1")
        if not _wait_for(gui, r"vhost-user", 3):
            # a submenu opened: pick its statistics item
            time.sleep(0.5)
            sub = _find(_popups(gui, base), r"statistic", right_of=at[0] + 40)
            assert sub is not None, f"vhost-user submenu without a statistics item: {seen}"
            gui.run("xdotool", "mousemove", "--sync", str(sub[0]), str(sub[1]), "click", "1")
        window = _wait_for(gui, r"vhost-user", 10)
        assert window, f"no statistics window: {gui.visible()}"
        time.sleep(1.0)
        path = gui.shots / "statistics.png"
        gui.run("import", "-window", window, str(path), timeout=30)
        text = " ".join(w for w, _, _ in gui.words(path))
        assert "ADDMEMREG" in _norm(text) and "GETFEATURES" in _norm(text), text
        err = gui.stderr.read_text(errors="replace")
        assert not re.search(r"lua|vhost", err, re.I), err
        return
    pytest.fail(f"no vhost-user entry in Statistics or Tools: {seen}")
