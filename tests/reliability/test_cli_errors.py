"""Bad input to the command line: one clear line each, a non-zero exit, never a traceback."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import socket
import subprocess
import sys
import time

import dpkt
import pytest

from vuinspect.testing import wire

from .conftest import log_text, start_proxy, stop, wait_until

pytestmark = pytest.mark.timeout(120)


def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", *argv], capture_output=True, text=True, timeout=timeout
    )


def one_line(res: subprocess.CompletedProcess, prefix: str) -> str:
    assert res.returncode != 0, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def _ethernet_pcapng() -> bytes:
    """What tcpdump or dumpcap would leave: pcapng, Ethernet link type, one packet (dpkt)."""
    buf = io.BytesIO()
    w = dpkt.pcapng.Writer(buf, linktype=dpkt.pcap.DLT_EN10MB)
    eth = dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=b"\x02" * 6, type=0x0800, data=b"x" * 46)
    w.writepkt(bytes(eth), ts=1764000000.0)
    return buf.getvalue()


def _classic_pcap() -> bytes:
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, linktype=dpkt.pcap.DLT_EN10MB)
    w.writepkt(b"\x00" * 60, ts=1764000000.0)
    return buf.getvalue()


def _upper_pdu_other_dissector() -> bytes:
    """Link type 252 too, but exported for another dissector (what Wireshark's Export PDU makes)."""
    import struct

    buf = io.BytesIO()
    w = dpkt.pcapng.Writer(buf, linktype=252)
    name = b"http\0\0\0\0"
    w.writepkt(
        struct.pack(">HH", 12, len(name)) + name + struct.pack(">HH", 0, 0) + b"GET /",
        ts=1764000000.0,
    )
    return buf.getvalue()


INPUTS = {
    "empty": (b"", "empty input"),
    "text": (b"root:x:0:0:root:/root:/bin/bash\n", "text file"),
    "binary": (os.urandom(64).replace(b"\n\r\r\n", b"xxxx") + b"\x00\xff", "not a pcapng capture"),
    "gzip": (gzip.compress(b"x" * 100), "gzip-compressed"),
    "classic-pcap": (_classic_pcap(), "classic pcap"),
    "ethernet-pcapng": (_ethernet_pcapng(), "link type 1"),
    "other-dissector": (_upper_pdu_other_dissector(), "'http'"),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("json", [False, True])
def test_read_foreign_files(tmp_path, name, json) -> None:
    data, words = INPUTS[name]
    path = tmp_path / f"{name}.pcapng"
    path.write_bytes(data)
    res = cli("read", *(["--json"] if json else []), str(path))
    line = one_line(res, f"vuinspect read: {path}: ")
    assert words in line, line
    assert res.returncode == 1 and res.stdout == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (["/nonexistent/cap.pcapng"], "no such file"),
        (["/tmp"], "is a directory"),
        (["--filter", "name ==", "CAP"], "bad filter"),
        (["--filter", "payload.num >", "CAP"], "bad filter"),
    ],
)
def test_read_bad_arguments(tmp_path, args, words) -> None:
    from vuinspect.capture import CaptureWriter
    from vuinspect.samples import device_start

    cap = tmp_path / "ok.pcapng"
    with CaptureWriter(str(cap)) as w:
        for f in device_start():
            w.write(f)
    res = cli("read", *[str(cap) if a == "CAP" else a for a in args])
    assert words in one_line(res, "vuinspect read: ")


def test_read_unreadable_file(tmp_path) -> None:
    """A path that cannot be opened (a unix socket): one line too."""
    path = str(tmp_path / "s.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    try:
        one_line(cli("read", path), "vuinspect read: ")
    finally:
        s.close()


@pytest.mark.parametrize("name", ["missing", "text", "classic-pcap", "gzip"])
def test_view_refuses_at_open(tmp_path, name) -> None:
    path = tmp_path / f"{name}.pcapng"
    if name != "missing":
        path.write_bytes(INPUTS[name][0])
    one_line(cli("view", str(path), timeout=30), "vuinspect view: ")


def test_view_refuses_a_foreign_pcapng(tmp_path) -> None:
    path = tmp_path / "eth.pcapng"
    path.write_bytes(_ethernet_pcapng())
    try:
        res = subprocess.run(
            [sys.executable, "-m", "vuinspect", "view", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=8,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the TUI started on a foreign capture") from None
    one_line(res, "vuinspect view: ")


# -- proxy ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["--listen", "A"], "pairs"),
        ([], "nothing to proxy"),
        (["--listen", "A", "--connect", "A"], "same path"),
        (["--listen", "A", "--connect", "B", "--listen", "A", "--connect", "C"], "twice"),
    ],
)
def test_proxy_bad_arguments(sockdir, args, words) -> None:
    args = [os.path.join(sockdir, a) if len(a) == 1 else a for a in args]
    res = cli("proxy", "--no-tui", *args)
    assert res.returncode == 1
    assert words in one_line(res, "vuinspect proxy: ")


@pytest.mark.parametrize("what", ["missing", "stale-socket"])
def test_backend_not_listening(sockdir, procs, what) -> None:
    """Each connection attempt waits --connect-timeout for the back-end, then sees EOF; the
    first failure is one clear line, the later ones one line with their count; the proxy goes on."""
    be = os.path.join(sockdir, "be.sock")
    if what == "stale-socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(be)
        s.close()  # bound, never listening: ECONNREFUSED
    px = os.path.join(sockdir, "px.sock")
    proxy = start_proxy(procs, px, be, "--connect-timeout", "0.3")
    for _ in range(3):
        fe = wire.connect(px)
        fe.settimeout(5)
        t0 = time.monotonic()
        # the proxy may already have closed the connection: EPIPE on send is that close too
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            fe.sendall(wire.pack(wire.GET_FEATURES))
        # closed with our request unread, the kernel may reset instead of giving EOF
        with contextlib.suppress(ConnectionResetError):
            assert fe.recv(100) == b""
        assert 0.25 < time.monotonic() - t0 < 2
        fe.close()
        wait_until(lambda: log_text(proxy).count("could not connect") == 1, 5, "the line")
    assert proxy.poll() is None
    assert stop(proxy) == 0
    lines = [ln for ln in log_text(proxy).splitlines() if "could not connect" in ln]
    reason = "No such file or directory" if what == "missing" else "Connection refused"
    first = _conn_numbers(lines)[0]
    assert len(lines) == 2, lines
    said = f"could not connect to {be}: {reason} (waited 0."
    assert lines[0].startswith(f"vuinspect proxy: connection {first}: {said}"), lines
    assert lines[1].startswith(f"vuinspect proxy: connection {first}: 2 more connection(s) to {px}")
    assert said in lines[1], lines
    assert "Traceback" not in log_text(proxy)


def _conn_numbers(lines: list[str]) -> list[int]:
    return [int(ln.split("connection ")[1].split(":")[0]) for ln in lines]


def test_connect_path_that_is_not_a_socket(sockdir) -> None:
    target = os.path.join(sockdir, "notasocket")
    with open(target, "w") as f:
        f.write("x")
    try:
        res = cli(
            "proxy",
            "--no-tui",
            "--listen",
            os.path.join(sockdir, "px.sock"),
            "--connect",
            target,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the proxy started with a regular file as its back-end") from None
    assert "not a socket" in one_line(res, "vuinspect proxy: ")
