"""The proxy's ``-w`` output under pressure and misuse (issue 11 items 2, 3, 10; issue 12 item 8).

A capture output nobody reads must cost bounded memory and never hold a stop
up; an existing file is never overwritten silently, nor through a hard link;
a refused start touches nothing; a FIFO with no reader says so; ring buffers,
autostop and the capture filter each give files that read on their own.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vuinspect.capture import read_frames
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import proxy_options, run_proxy, timed_stop

from .conftest import (
    linked_file,
    log_text,
    report,
    rss_kib,
    start_backend,
    start_proxy,
    wait_line,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
MIB = 1 << 20


class Sink:
    """A back-end that reads and throws away everything (counts the bytes)."""

    def __init__(self, path: str) -> None:
        self.listener = wire.listen(path)
        self.received = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while chunk := conn.recv(1 << 20):
                self.received += len(chunk)

    def close(self) -> None:
        self.listener.close()


def _stalled_stdout_proxy(sockdir: str, procs, *extra: str):
    """``proxy -w -`` whose stdout is a pipe nobody reads, a sink back-end, a front-end socket."""
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    sink = Sink(be)
    proxy = start_proxy(procs, px, be, "-w", "-", *extra, stdout=subprocess.PIPE)
    fe = wire.connect(px)
    return proxy, fe, sink


def _flood(fe: socket.socket, sink: Sink, count: int, size: int = 64 * 1024 - 12) -> int:
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, b"\0" * size)
    for _ in range(count):
        fe.sendall(msg)
    total = count * len(msg)
    wait_until(lambda: sink.received >= total, timeout=60, what="all forwarded")
    return total


def test_unread_stdout_keeps_memory_bounded(sockdir, procs) -> None:
    """Issue 11 item 2: 64 KiB messages into `-w -` nobody reads grew RSS without bound."""
    proxy, fe, sink = _stalled_stdout_proxy(sockdir, procs)
    before = rss_kib(proxy.pid)
    total = _flood(fe, sink, 3000)  # ~190 MiB through a pipe that takes 64 KiB
    after = rss_kib(proxy.pid)
    report(
        "unread_stdout_rss", forwarded_mib=total // MIB, rss_before_kib=before, rss_after_kib=after
    )
    assert sink.received == total  # forwarding unaffected
    assert (after - before) * 1024 < 32 * MIB + 40 * MIB, f"RSS grew {before} -> {after} KiB"
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(10)
    fe.close()
    sink.close()
    assert "dropped from the capture" in log_text(proxy) or "could not be written" in log_text(
        proxy
    )


def test_stop_is_quick_when_the_output_blocks(sockdir, procs) -> None:
    """Issue 11 item 3: SIGTERM with a blocked -w output hung (still running 40 s later)."""
    proxy, fe, sink = _stalled_stdout_proxy(sockdir, procs)
    _flood(fe, sink, 200)
    rc, took = timed_stop(proxy, timeout=10)
    report("stop_with_blocked_output", seconds=round(took, 2))
    assert rc == 0
    assert took < 3.0, f"stop took {took:.1f} s"
    text = log_text(proxy)
    assert "could not be written to the capture" in text, text
    assert "Traceback" not in text
    fe.close()
    sink.close()


# -- file handling (issue 11 item 10) -------------------------------------------------------
def _run_proxy(sockdir: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return run_proxy("--no-tui", *args, timeout=timeout, cwd=sockdir)


def _run_routed(sockdir: str, *args: str, listen: str = "") -> subprocess.CompletedProcess:
    """:func:`_run_proxy` from ``listen`` (px.sock) to be.sock in ``sockdir``, then ``args``."""
    be = os.path.join(sockdir, "be.sock")
    route = proxy_options(listen or os.path.join(sockdir, "px.sock"), be, no_tui=False, quiet=False)
    return _run_proxy(sockdir, *route, *args)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_existing_capture_is_not_overwritten_without_force(sockdir) -> None:
    cap = os.path.join(sockdir, "old.pcapng")
    with open(cap, "w") as f:
        f.write("precious")
    os.chmod(cap, 0o644)
    res = _run_routed(sockdir, "-w", cap)
    _one_line_error(res, "exists", "--force")
    assert Path(cap).read_text() == "precious"
    assert stat.S_IMODE(os.stat(cap).st_mode) == 0o644
    assert not os.path.exists(os.path.join(sockdir, "px.sock"))


def test_never_through_a_hard_link_even_with_force(sockdir) -> None:
    target, link = linked_file(sockdir, "link.pcapng", "keep", os.link)
    res = _run_routed(sockdir, "-w", link, "--force")
    _one_line_error(res, "hard link")
    assert Path(target).read_text() == "keep"


def test_refused_start_leaves_the_capture_untouched(sockdir) -> None:
    cap = os.path.join(sockdir, "old.pcapng")
    with open(cap, "w") as f:
        f.write("precious")
    regular = os.path.join(sockdir, "not-a-socket")
    with open(regular, "w") as f:
        f.write("x")
    res = _run_routed(sockdir, "-w", cap, "--force", listen=regular)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert Path(cap).read_text() == "precious"  # opened only once listening worked
    fresh = os.path.join(sockdir, "new.pcapng")
    res = _run_routed(sockdir, "-w", fresh, listen=regular)
    assert res.returncode != 0
    assert not os.path.exists(fresh)


def test_force_overwrites_a_plain_file(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "old.pcapng")
    with open(cap, "w") as f:
        f.write("old content " * 100)
    os.chmod(cap, 0o644)
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", cap, "--force")
    fe = Frontend(wire.connect(px, retries=50))
    fe.handshake()
    fe.close()
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    frames = list(read_frames(cap))
    assert frames and frames[0].kind == "open"
    assert stat.S_IMODE(os.stat(cap).st_mode) == 0o600


def test_fifo_without_reader_says_it_waits(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    fifo = os.path.join(sockdir, "cap.fifo")
    os.mkfifo(fifo)
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", fifo, quiet=False)  # listening: not blocked
    wait_line(proxy, "waiting for a reader")
    got = bytearray()

    def read_all() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    fe = Frontend(wire.connect(px, retries=50))
    fe.handshake()
    fe.close()
    time.sleep(0.3)
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    reader.join(10)
    path = os.path.join(sockdir, "from-fifo.pcapng")
    with open(path, "wb") as f:
        f.write(got)
    assert [f.kind for f in read_frames(path)][0] == "open"


def test_fifo_nobody_opens_does_not_hold_the_stop(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    fifo = os.path.join(sockdir, "cap.fifo")
    os.mkfifo(fifo)
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", fifo)
    t0 = time.monotonic()
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--view-fd", "999"], ["--view-fd 999", "not an open file descriptor"]),
        (["--connect", ""], ["--connect", "empty"]),
        (["-b", "filesize:0"], ["filesize", "positive"]),
        (["-b", "bogus:1"], ["-b bogus:1"]),
        (["-c", "5"], ["-w FILE"]),
        (["--capture-filter", "name =="], ["--capture-filter"]),
        (["-w", "/nonexistent-dir/cap.pcapng"], ["No such directory"]),
    ],
)
def test_bad_capture_arguments_are_one_line(sockdir, args, words) -> None:
    base = ["--listen", os.path.join(sockdir, "px.sock")]
    if "--connect" not in args:
        base += ["--connect", os.path.join(sockdir, "be.sock")]
    res = _run_proxy(sockdir, *base, *args)
    _one_line_error(res, *words)


# -- limits and the capture filter (issue 12 item 8) -----------------------------------------
def _session(px: str, rounds: int) -> Frontend:
    fe = Frontend(wire.connect(px, retries=50))
    fe.handshake()
    fe.round_trips(rounds)
    return fe


def test_ring_buffer_files_each_read_on_their_own(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "ring.pcapng")
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", cap, "-b", "filesize:4", "-b", "files:3")
    fe = _session(px, 300)
    time.sleep(0.3)
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    fe.close()
    files = sorted(glob.glob(os.path.join(sockdir, "ring_*.pcapng")))
    assert len(files) == 3, files
    assert files[-1].split("_")[-2] > "00003"  # older files were removed
    for path in files:
        frames = list(read_frames(path))
        assert frames[0].kind == "open", path  # the live connection's open, re-emitted
        assert any(f.kind == "data" for f in frames)
        assert os.path.getsize(path) < 4000 + 8192
        res = subprocess.run(
            [sys.executable, "-m", "vuinspect", "read", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        if shutil.which("tshark"):
            ts = subprocess.run(
                ["tshark", "-r", path, "-T", "fields", "-e", "frame.number"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert len(ts.stdout.split()) == len(frames), ts.stderr


def test_count_ends_the_capture_not_the_forwarding(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "c.pcapng")
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", cap, "-c", "10", quiet=False)
    fe = _session(px, 50)  # all 50 round trips made it through
    wait_line(proxy, "capture to")
    fe.close()
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    frames = list(read_frames(cap))
    assert len([f for f in frames if f.kind == "data"]) == 10


def test_capture_filter_records_only_matching_messages(sockdir, procs) -> None:
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    cap = os.path.join(sockdir, "f.pcapng")
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, "-w", cap, "--capture-filter", "name == GET_FEATURES")
    fe = _session(px, 20)
    fe.close()
    time.sleep(0.3)
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    res = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", cap], capture_output=True, text=True, timeout=60
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    names = [ln for ln in lines if "OPEN" not in ln and "CLOSE" not in ln]
    assert names and all("GET_FEATURES" in ln for ln in names), res.stdout
    assert len(names) == 2 * (1 + 20)  # the handshake's and the round trips', both ways
    assert "GET_PROTOCOL_FEATURES" not in res.stdout and "SET_MEM_TABLE" not in res.stdout


def test_extcap_capture_filter_is_validated_and_applied(sockdir, procs) -> None:
    """Wireshark's capture filter field reaches the extcap as --extcap-capture-filter."""
    base = [sys.executable, "-m", "vuinspect.wireshark.extcap", "--extcap-interface", "vhostuser"]
    bad = subprocess.run(
        [*base, "--extcap-capture-filter", "name =="], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode != 0 and bad.stdout.strip() and "Traceback" not in bad.stderr
    good = subprocess.run(
        [*base, "--extcap-capture-filter", "name == GET_FEATURES"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    fifo = os.path.join(sockdir, "ws.fifo")
    os.mkfifo(fifo)
    start_backend(procs, be)
    ext = procs.start(
        [
            "vuinspect.wireshark.extcap",
            "--extcap-interface",
            "vhostuser",
            "--capture",
            "--fifo",
            fifo,
            "--listen",
            px,
            "--connect",
            be,
            "--extcap-capture-filter",
            "name == GET_FEATURES",
        ],
        "extcap",
    )
    wait_until(lambda: os.path.exists(px), what="extcap listening")
    time.sleep(0.3)
    with open(fifo, "rb") as f:  # opened late: the extcap waits for its reader
        assert ext.poll() is None
        fe = _session(px, 5)
        fe.close()
        time.sleep(0.3)
        ext.send_signal(signal.SIGTERM)
        data = f.read()
    assert ext.wait(10) == 0
    path = os.path.join(sockdir, "ws.pcapng")
    with open(path, "wb") as out:
        out.write(data)
    got = [f for f in read_frames(path) if f.kind == "data"]
    assert len(got) == 2 * (1 + 5)  # GET_FEATURES requests and replies only


def test_stop_is_quick_when_the_summary_lines_block(sockdir, procs) -> None:
    """The same for the display: summary lines into a pipe nobody reads (the engine waited 60 s)."""
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    start_backend(procs, be)
    proxy = start_proxy(procs, px, be, quiet=False, stdout=subprocess.PIPE)
    fe = _session(px, 3000)  # ~6000 lines: far more than the pipe holds
    fe.close()
    time.sleep(1.0)
    rc, took = timed_stop(proxy, timeout=20)
    report("stop_with_blocked_display", seconds=round(took, 2))
    assert rc == 0
    assert took < 5.0, f"stop took {took:.1f} s"
    assert "could not write its output" in log_text(proxy)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="no tshark")
def test_tshark_capture_filter_through_the_extcap(sockdir, procs) -> None:
    """`tshark -i vhostuser -f FILTER`: Wireshark hands the filter to the extcap, which
    records only the matching messages, or refuses an invalid one with one line."""
    home = os.path.join(sockdir, "home")
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
    subprocess.run(
        [sys.executable, "-m", "vuinspect", "install-dissector", "--extcap"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    be, px = os.path.join(sockdir, "be.sock"), os.path.join(sockdir, "px.sock")
    out = os.path.join(sockdir, "ts.pcapng")
    start_backend(procs, be)
    opts = ["-o", f"extcap.vhostuser.listen:{px}", "-o", f"extcap.vhostuser.connect:{be}"]
    ts = subprocess.Popen(
        [
            "tshark",
            "-i",
            "vhostuser",
            "-f",
            "name == GET_FEATURES",
            *opts,
            "-c",
            "9",
            "-a",
            "duration:30",
            "-w",
            out,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: os.path.exists(px), timeout=20, what="extcap listening")
        fe = _session(px, 3)
        fe.close()
        ts.wait(30)
    finally:
        if ts.poll() is None:
            ts.kill()
            ts.wait()
    data = [f for f in read_frames(out) if f.kind == "data"]
    assert len(data) == 2 * (1 + 3)
    # An invalid filter: our one line, and tshark ends (dumpcap waited for ever for the FIFO).
    bad = subprocess.run(
        [
            "tshark",
            "-i",
            "vhostuser",
            "-f",
            "name ==",
            *opts,
            "-a",
            "duration:1",
            "-w",
            os.path.join(sockdir, "bad.pcapng"),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "capture filter: expected a value" in bad.stderr
