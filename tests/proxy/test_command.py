"""``vuinspect proxy`` as a subprocess: readiness line, capture, signals, interpose, refusals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vuinspect.proxy.interpose import Interposer, Listener, ListenError
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import backend_args, proxy_args, run_proxy, wait_text
from vuinspect.testing.procs import stop as procs_stop

pytestmark = pytest.mark.timeout(60)


def start(argv: list[str], log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=kw.pop("stdout", subprocess.DEVNULL),
        stderr=open(log, "wb"),
        **kw,
    )


def wait_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 15) -> None:
    wait_text(log, text, proc, timeout)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    return procs_stop(proc, sig, 60)  # generous: a loaded 2-core CI machine is slow to stop a TUI


def start_proxy(
    procs,
    px: str,
    be: str,
    log: Path,
    *extra: str,
    quiet: bool = False,
    no_tui: bool = True,
    ready: str = "listening on",
    **kw,
) -> subprocess.Popen:
    """``vuinspect proxy`` from ``px`` to ``be`` (see :func:`proxy_args`), stderr to ``log``,
    returned once ``ready`` is there; ``kw`` to Popen."""
    proxy = start(proxy_args(px, be, *extra, quiet=quiet, no_tui=no_tui), log, **kw)
    procs.append(proxy)
    wait_line(log, ready, proxy)
    return proxy


def start_cli_proxy(sockdir: str, procs) -> tuple[str, str, str, Path, Path, subprocess.Popen]:
    """A back-end and ``vuinspect proxy --no-tui -w`` in front of it, listening:
    (back-end path, proxy path, capture path, stderr log, stdout file, proxy process)."""
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    log = Path(sockdir) / "proxy.log"
    out = Path(sockdir) / "proxy.out"
    stdout = open(out, "wb")  # noqa: SIM115
    proxy = start_proxy(
        procs, px, be, log, "-w", cap, ready=f"listening on {px} -> {be}", stdout=stdout
    )
    return be, px, cap, log, out, proxy


def session(px: str, rounds: int = 0, retries: int = 0) -> Frontend:
    """A QEMU-like start and ``rounds`` round trips through ``px``, then a close and a moment
    for it to reach the proxy; the front-end keeps what it sent and received."""
    fe = Frontend(wire.connect(px, retries=retries))
    fe.handshake()
    fe.round_trips(rounds)
    fe.close()
    time.sleep(0.3)
    return fe


def run_backend(sockdir: str, procs, name: str = "be.sock", *extra: str) -> str:
    path = os.path.join(sockdir, name)
    log = Path(sockdir) / f"{name}.log"
    p = start(backend_args(path, *extra), log)
    procs.append(p)
    wait_line(log, "listening on", p)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_proxy_capture_and_clean_exit(sockdir, procs, sig) -> None:
    from vuinspect.capture import read_frames

    be, px, cap, log, out, proxy = start_cli_proxy(sockdir, procs)
    assert stat.S_IMODE(os.stat(px).st_mode) == 0o600
    fe = session(px, 10)
    assert stop(proxy, sig) == 0
    assert not os.path.exists(px)
    frames = list(read_frames(cap))
    data = [f for f in frames if f.kind == "data"]
    assert len(data) == len(fe.sent) + len(fe.received)
    assert frames[0].kind == "open" and frames[-1].kind == "close"
    lines = out.read_text().splitlines()
    assert any("GET_FEATURES" in line for line in lines)
    assert any("SET_MEM_TABLE" in line and "memfd:guest-ram0" in line for line in lines)


def test_cli_capture_to_stdout_keeps_stdout_clean(sockdir, procs) -> None:
    from vuinspect.capture import read_frames

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "proxy.log"
    cap = Path(sockdir) / "stdout.pcapng"
    stdout = open(cap, "wb")  # noqa: SIM115
    proxy = start_proxy(procs, px, be, log, "-w", "-", no_tui=False, stdout=stdout)
    fe = session(px)
    assert stop(proxy) == 0
    frames = list(read_frames(str(cap)))  # the whole stdout parses as one capture
    assert len([f for f in frames if f.kind == "data"]) == len(fe.sent) + len(fe.received)
    assert "GET_FEATURES" in log.read_text()  # summaries went to stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interpose_restores_socket_on_signal(sockdir, procs, sig) -> None:
    be = run_backend(sockdir, procs)
    os.chmod(be, 0o640)
    before = os.stat(be)
    log = Path(sockdir) / "proxy.log"
    proxy = start(["vuinspect", "proxy", "--interpose", be, "--no-tui", "--device", "blk"], log)
    procs.append(proxy)
    wait_line(log, "listening on", proxy)
    moved = be + ".vuinspect-orig"
    assert os.stat(moved).st_ino == before.st_ino
    now = os.stat(be)
    assert now.st_ino != before.st_ino
    assert stat.S_IMODE(now.st_mode) == 0o640 and (now.st_uid, now.st_gid) == (
        before.st_uid,
        before.st_gid,
    )
    fe = Frontend(wire.connect(be))
    fe.handshake()
    fe.close()
    time.sleep(0.2)
    assert stop(proxy, sig) == 0
    assert "1 connection(s)" in log.read_text()
    assert os.stat(be).st_ino == before.st_ino
    assert not os.path.exists(moved)
    fe = Frontend(wire.connect(be))  # the back-end answers directly again
    assert fe.call(wire.GET_FEATURES) is not None
    fe.close()


def test_interpose_refuses_missing_and_leftover(sockdir, procs) -> None:
    missing = os.path.join(sockdir, "none.sock")
    p = run_proxy("--interpose", missing)
    assert p.returncode == 1 and "no such socket" in p.stderr and "Traceback" not in p.stderr
    be = run_backend(sockdir, procs)
    Path(be + ".vuinspect-orig").write_text("left over")
    p = run_proxy("--interpose", be)
    assert p.returncode == 1 and "already exists" in p.stderr
    assert stat.S_ISSOCK(os.lstat(be).st_mode)


def test_listen_path_refusals(sockdir, procs) -> None:
    target = os.path.join(sockdir, "target")
    Path(target).write_text("precious")
    link = os.path.join(sockdir, "link.sock")
    os.symlink(target, link)
    with pytest.raises(ListenError, match="symlink"):
        Listener(link).open()
    with pytest.raises(ListenError, match="not a socket"):
        Listener(target).open()
    assert Path(target).read_text() == "precious" and os.path.islink(link)
    live = run_backend(sockdir, procs, "live.sock")
    with pytest.raises(ListenError, match="already listening"):
        Listener(live).open()
    p = run_proxy("--listen", link, "--connect", live)
    assert p.returncode == 1 and "symlink" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(ListenError, match="symlink"):
        Interposer(link).open()


def test_stale_socket_is_replaced(sockdir) -> None:
    import socket

    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    lst = Listener(path, 0o660)
    lst.open()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    c = wire.connect(path)
    c.close()
    lst.close()
    assert not os.path.exists(path)


def test_cli_argument_errors(sockdir) -> None:
    p = run_proxy("--listen", "a")
    assert p.returncode == 1 and "pairs" in p.stderr
    p = run_proxy()
    assert p.returncode == 1 and "nothing to proxy" in p.stderr


def test_help_is_for_users() -> None:
    p = run_proxy("--help")
    assert p.returncode == 0
    assert ".py" not in p.stdout  # no module names (engine.py, viewer.py)
    lines = p.stdout.splitlines()
    examples = [ln for ln in lines if ln.strip().startswith("vuinspect proxy ")]
    assert len(examples) >= 4  # each example on its own line, as written
    assert all(ln.count("vuinspect proxy") == 1 for ln in examples)
    for flag in ("--force", "--capture-filter", "--capture-buffer", "-b KEY:N", "-a KEY:N", "-c N"):
        assert flag in p.stdout


def test_quiet_prints_only_the_ready_line(sockdir, procs) -> None:
    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "quiet.log"
    out = Path(sockdir) / "quiet.out"
    q = os.path.join(sockdir, "q.pcapng")
    stdout = open(out, "wb")  # noqa: SIM115
    ready = f"listening on {px} -> {be}"
    proxy = start_proxy(
        procs, px, be, log, "-w", q, quiet=True, no_tui=False, ready=ready, stdout=stdout
    )
    session(px, 5)
    assert stop(proxy) == 0
    assert out.read_text() == ""
    assert log.read_text().splitlines() == [f"listening on {px} -> {be}"]


@pytest.mark.parametrize("how", ["key q", "SIGTERM"])
def test_tui_is_the_default_on_a_terminal(sockdir, procs, how) -> None:
    import fcntl
    import pty
    import select
    import struct as st
    import termios

    from vuinspect.capture import read_frames

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, st.pack("HHHH", 40, 120, 0, 0))
    proxy = subprocess.Popen(
        [sys.executable, "-m", "vuinspect", "proxy", "--listen", px, "--connect", be, "-w", cap],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env=dict(os.environ, TERM="xterm-256color"),
    )
    procs.append(proxy)
    os.close(slave)
    screen = bytearray()

    def read_for(seconds: float, until: bytes | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until in screen):
            if select.select([master], [], [], 0.05)[0]:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:
                    return

    try:
        read_for(15, b"listening on")
        time.sleep(1.0)
        fe = Frontend(wire.connect(px))
        fe.handshake()
        fe.close()
        read_for(10, b"SET_MEM_TABLE")
        assert b"SET_MEM_TABLE" in screen  # the live feed reached the TUI
        if how == "key q":
            os.write(master, b"q")
        else:
            proxy.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15
        while proxy.poll() is None and time.monotonic() < end:
            read_for(0.2)
        assert proxy.wait(1) == 0
    finally:
        os.close(master)
    frames = list(read_frames(cap))
    assert len([f for f in frames if f.kind == "data"]) == len(fe.sent) + len(fe.received)
    assert frames[-1].kind == "close"


def test_headless_tui_for_benchmarks(sockdir, procs) -> None:
    from vuinspect.capture import read_frames

    be = run_backend(sockdir, procs)
    px = os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "cap.pcapng")
    log = Path(sockdir) / "proxy.log"
    proxy = start_proxy(
        procs, px, be, log, "--tui-headless", "-w", cap, no_tui=False, stdin=subprocess.DEVNULL
    )
    fe = session(px, 100, retries=50)
    assert stop(proxy) == 0
    frames = list(read_frames(cap))
    assert len([f for f in frames if f.kind == "data"]) == len(fe.sent) + len(fe.received)


def test_paths_are_escaped_in_every_line_the_proxy_prints(sockdir, procs) -> None:
    """A path with terminal sequences (a title-setting OSC here) is shown escaped: in the
    'listening on' line and in a refusal, never raw on the user's terminal."""
    evil = os.path.join(sockdir, "\x1b]0;evil\x07be.sock")
    px = os.path.join(sockdir, "px.sock")
    log = Path(sockdir) / "evil.log"
    proxy = start_proxy(procs, px, evil, log)
    assert stop(proxy) == 0
    text = log.read_text()
    assert "\x1b" not in text and "\x07" not in text, text
    assert f"listening on {px} -> {sockdir}/\\x1b]0;evil\\x07be.sock" in text

    Path(evil).write_text("not a socket")
    p = run_proxy("--listen", px, "--connect", evil, "--no-tui")
    assert p.returncode == 1
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr, p.stderr
    assert "\\x1b]0;evil\\x07be.sock is not a socket" in p.stderr
