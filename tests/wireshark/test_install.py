"""install-dissector and the extcap interface, with HOME and XDG dirs in a temp dir.

Every tshark here reads its personal folders from the temp HOME, so the real
user's Wireshark setup is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ws_pdml as W

from vuinspect.wireshark import install
from vuinspect.wireshark.extcap import INTERFACE

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(120)]


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def vuinspect(home: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = W.tshark_env(home)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def names_without_x(home: Path, capture: Path) -> list[str]:
    """Request names tshark shows with no -X option (none when the dissector is not loaded)."""
    env = W.tshark_env(home)
    protos = W.tshark("-r", str(capture), "-T", "fields", "-e", "frame.protocols", env=env)
    assert protos.returncode == 0, protos.stderr
    if "vhost_user" not in protos.stdout:
        return []
    proc = W.tshark("-r", str(capture), "-T", "fields", "-e", "vhost_user.name", env=env)
    assert proc.returncode == 0, proc.stderr
    return [ln for ln in proc.stdout.splitlines() if ln]


def test_parse_folders_reads_tshark_output():
    text = (
        "Personal configuration:\t/h/.config/wireshark\nPersonal Lua Plugins:\t/h/.local/lib/"
        "wireshark/plugins\nExtcap path:         \t/usr/lib/x/extcap\n"
    )
    got = install.parse_folders(text)
    assert got["Personal Lua Plugins"] == "/h/.local/lib/wireshark/plugins"
    assert got["Extcap path"] == "/usr/lib/x/extcap"


def test_install_then_uninstall(home, sample_captures):
    capture = sample_captures["every_le"]
    assert names_without_x(home, capture) == []
    proc = vuinspect(home, "install-dissector")
    assert proc.returncode == 0, proc.stderr
    lua = home / ".local/lib/wireshark/plugins/vhost_user.lua"
    assert str(lua) in proc.stdout
    assert lua.read_text() == W.LUA.read_text()
    names = names_without_x(home, capture)
    assert "SET_MEM_TABLE" in names and "GET_FEATURES" in names
    printed = vuinspect(home, "install-dissector", "--print-path")
    assert printed.stdout.strip() == str(lua)
    proc = vuinspect(home, "install-dissector", "--uninstall")
    assert proc.returncode == 0 and f"removed {lua}" in proc.stdout
    assert not lua.exists()
    assert names_without_x(home, capture) == []
    again = vuinspect(home, "install-dissector", "--uninstall")
    assert "nothing to remove" in again.stdout


def test_extcap_is_listed_once_installed(home):
    assert INTERFACE not in W.tshark("-D", env=W.tshark_env(home)).stdout
    proc = vuinspect(home, "install-dissector", "--extcap")
    assert proc.returncode == 0, proc.stderr
    launcher = home / ".config/wireshark/extcap" / install.EXTCAP_NAME
    assert os.access(launcher, os.X_OK)
    assert launcher.read_text().startswith(f"#!{sys.executable}\n")
    listed = W.tshark("-D", env=W.tshark_env(home)).stdout
    assert f"{INTERFACE} (vhost-user proxy (vuinspect))" in listed
    # Wireshark runs the launcher itself: it must answer the extcap queries on its own.
    out = subprocess.run(
        [str(launcher), "--extcap-interfaces"],
        capture_output=True,
        text=True,
        env=W.tshark_env(home),
        timeout=30,
        check=True,
    ).stdout
    assert f"interface {{value={INTERFACE}}}" in out
    config = subprocess.run(
        [str(launcher), "--extcap-interface", INTERFACE, "--extcap-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "{call=--listen}" in config and "{call=--connect}" in config
    dlts = subprocess.run(
        [str(launcher), "--extcap-interface", INTERFACE, "--extcap-dlts"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "{number=252}" in dlts
    vuinspect(home, "install-dissector", "--uninstall")
    assert not launcher.exists()
    assert INTERFACE not in W.tshark("-D", env=W.tshark_env(home)).stdout


def test_without_tshark_says_what_to_do(home):
    proc = vuinspect(home, "install-dissector", "--print-path", path="/nonexistent")
    assert proc.returncode == 0
    assert "tshark was not found" in proc.stderr and "install" in proc.stderr
    assert proc.stdout.strip() == str(home / ".local/lib/wireshark/plugins/vhost_user.lua")


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"{proc.args[0]} exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="no qemu-storage-daemon")
def test_live_capture_through_extcap_against_a_real_backend(home):
    from vuinspect.testing.frontend import Frontend

    assert vuinspect(home, "install-dissector", "--extcap").returncode == 0
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="vuext"))
    image, backend, listen, out = d / "disk.img", d / "b.sock", d / "a.sock", d / "live.pcapng"
    image.write_bytes(b"\0" * (4 << 20))
    qsd = subprocess.Popen(
        [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=file,node-name=file,filename={image}",
            "--export",
            f"type=vhost-user-blk,id=exp,node-name=file,addr.type=unix,"
            f"addr.path={backend},writable=on",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    ts = None
    try:
        _wait_for(backend, 10, qsd)
        ts = subprocess.Popen(
            [
                "tshark",
                "-i",
                INTERFACE,
                "-o",
                f"extcap.{INTERFACE}.listen:{listen}",
                "-o",
                f"extcap.{INTERFACE}.connect:{backend}",
                "-w",
                str(out),
            ],
            env=W.tshark_env(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(listen, 20, ts)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(listen))
        fe = Frontend(sock)
        fe.handshake(queues=0)
        fe.close()
        time.sleep(0.5)
        ts.send_signal(signal.SIGINT)
        assert ts.wait(20) == 0, ts.stderr.read() if ts.stderr else ""
    finally:
        for p in (ts, qsd):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert not listen.exists(), "the proxy left its listen socket behind"
    lua = W.dissect(out)
    py = W.python_views(out)
    names = [v.get("name") for v in lua.views.values()]
    assert {"GET_FEATURES", "SET_PROTOCOL_FEATURES", "SET_MEM_TABLE"} <= set(names)
    assert W.compare(py, lua) == []
    shutil.rmtree(d, ignore_errors=True)


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
import ws_samples
from vuinspect.capture import CaptureWriter
w = CaptureWriter("-")
for f in ws_samples.framing_frames():
    w.write(f)
    w.flush()
    time.sleep(0.01)
w.close()
"""


def test_capture_on_stdout_pipes_into_tshark_live():
    """`vuinspect proxy -w - | wireshark -k -i -`: our stream is readable as a live pipe."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent))],
        stdout=subprocess.PIPE,
    )
    try:
        proc = subprocess.run(
            [
                "tshark",
                "-i",
                "-",
                "-l",
                "-X",
                f"lua_script:{W.LUA}",
                "-T",
                "fields",
                "-e",
                "vhost_user.name",
            ],
            stdin=writer.stdout,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        writer.stdout.close()
        writer.wait(10)
    assert proc.returncode == 0, proc.stderr
    import ws_samples

    want = [
        m["name"]
        for m in W.python_views(ws_samples.framing_frames())
        if m["kind"] in ("message", "raw")
    ]
    got = [n for line in proc.stdout.splitlines() for n in line.split(",") if n]
    assert got == want


def test_extcap_capture_stops_cleanly_on_sigterm(tmp_path):
    """Wireshark ends a capture with SIGTERM: sockets go away, the pcapng is whole."""
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="vuterm"))
    listen, out = d / "l.sock", tmp_path / "out.pcapng"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from vuinspect.wireshark.extcap import main; raise SystemExit(main())",
            "--capture",
            "--extcap-interface",
            INTERFACE,
            "--fifo",
            str(out),
            "--listen",
            str(listen),
            "--connect",
            str(d / "nobody.sock"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(listen, 20, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not listen.exists()
    info = W.tshark("-r", str(out))
    assert info.returncode == 0, info.stderr
    shutil.rmtree(d, ignore_errors=True)
