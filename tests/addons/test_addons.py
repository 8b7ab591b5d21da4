"""The addon hook API through the in-process proxy: each action, errors, a blocking hook,
the session state, and scripts refused at start."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from tests.addons.helpers import EXAMPLES, addon_notes, addon_proxy, write_script
from tests.proxy.conftest import wait_until
from vuinspect.addons import AddonError, load_addons
from vuinspect.testing import wire
from vuinspect.testing.frontend import Frontend
from vuinspect.testing.procs import proxy_options, run_proxy
from vuinspect.testing.wire import recv_within as recv

pytestmark = pytest.mark.timeout(30)


def pair(sockdir, proxy, source: str, lines: list[str] | None = None):
    """(front-end socket, back-end socket, server, recorder) with one addon from ``source``."""
    listener = wire.listen(os.path.join(sockdir, "be.sock"))
    srv, rec, px = addon_proxy(proxy, sockdir, [write_script(sockdir, source)], lines)
    fe = wire.connect(px)
    be, _ = listener.accept()
    listener.close()
    return fe, be, srv, rec


def test_payload_change_is_re_encoded(sockdir, proxy):
    fe, be, srv, rec = pair(
        sockdir,
        proxy,
        (
            "def message(flow, msg):\n"
            "    if msg.name == 'SET_VRING_NUM':\n"
            "        msg.payload['num'] = 64\n"
        ),
    )
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 1, 256))
    fe.sendall(msg)
    assert recv(be).payload == struct.pack("=II", 1, 64)
    fe.sendall(wire.pack(wire.SET_OWNER))
    assert recv(be).request == wire.SET_OWNER  # untouched messages pass as they were
    (n,) = addon_notes(rec)
    assert (n["addon"], n["action"], n["original"]) == ("addon.py", "modify", msg.hex())
    assert n["text"] == "addon addon.py: payload.num 256 -> 64"
    assert n["new"] == wire.pack(wire.SET_VRING_NUM, 1, struct.pack("=II", 1, 64)).hex()
    # The capture holds what the back-end got.
    wait_until(lambda: len(rec.data()) >= 2)
    assert rec.data()[0].data.hex() == n["new"]


def test_drop_answer_disconnect(sockdir, proxy):
    fe, be, srv, rec = pair(
        sockdir,
        proxy,
        (
            "def message(flow, msg):\n"
            "    if msg.name == 'SET_VRING_CALL':\n"
            "        msg.drop()\n"
            "    elif msg.name == 'GET_QUEUE_NUM':\n"
            "        msg.answer({'num_queues': 7})\n"
            "    elif msg.name == 'GET_CONFIG':\n"
            "        msg.answer_error()\n"
            "    elif msg.name == 'SET_VRING_ENABLE':\n"
            "        msg.disconnect()\n"
        ),
    )
    fe.sendall(wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(0)))
    fe.sendall(wire.pack(wire.GET_QUEUE_NUM))
    got = recv(fe)
    assert (got.request, got.flags, got.u64) == (wire.GET_QUEUE_NUM, wire.REPLY_FLAGS, 7)
    fe.sendall(
        wire.pack(wire.GET_CONFIG, wire.FLAG_VERSION, struct.pack("=III", 0, 8, 0) + bytes(8))
    )
    got = recv(fe)
    assert (got.request, got.payload) == (wire.GET_CONFIG, b"")  # the spec's failure: size 0
    fe.sendall(wire.pack(wire.SET_OWNER))
    assert recv(be).request == wire.SET_OWNER  # the back-end saw none of the three
    fe.sendall(wire.pack(wire.SET_VRING_ENABLE, wire.FLAG_VERSION, struct.pack("=II", 0, 1)))
    assert recv(be) is None and recv(fe) is None
    actions = [n["action"] for n in addon_notes(rec, 4)]
    assert actions == ["drop", "answer", "answer", "disconnect"]
    wait_until(lambda: rec.events("close"))
    assert "addon addon.py" in rec.events("close")[0]["reason"]


def test_exception_reported_and_message_forwarded_unchanged(sockdir, proxy):
    lines: list[str] = []
    fe, be, srv, rec = pair(
        sockdir,
        proxy,
        (
            "def message(flow, msg):\n"
            "    msg.payload['num'] = 1\n"
            "    msg.delay(5)\n"
            "    raise RuntimeError('boom')\n"
        ),
        lines,
    )
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256))
    t0 = time.monotonic()
    fe.sendall(msg)
    got = recv(be)
    assert got.raw == msg and time.monotonic() - t0 < 1  # unchanged, not delayed: undone
    (n,) = addon_notes(rec)
    assert n["action"] == "error" and n["error"] == "RuntimeError: boom" and n["new"] == msg.hex()
    assert len(lines) == 1 and "message() raised RuntimeError: boom" in lines[0]
    assert "addon.py:4" in lines[0] and "forwarded unchanged" in lines[0]
    fe.sendall(msg)  # the link lives on
    assert recv(be).raw == msg


def test_payload_that_cannot_be_encoded_is_an_error(sockdir, proxy):
    fe, be, srv, rec = pair(
        sockdir, proxy, ("def message(flow, msg):\n    msg.payload['num'] = 1 << 40\n"), []
    )
    msg = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256))
    fe.sendall(msg)
    assert recv(be).raw == msg
    assert addon_notes(rec)[0]["action"] == "error"


def test_blocking_hook_holds_only_its_connection(sockdir, proxy, backend_server):
    """A hook that sleeps holds its own connection; another connection is relayed at once."""
    lines: list[str] = []
    backend_server()
    script = write_script(
        sockdir,
        (
            "import time\n"
            "def message(flow, msg):\n"
            "    if msg.name == 'GET_VRING_BASE' and not msg.reply:  # (the request only)\n"
            "        time.sleep(1.5)\n"
        ),
    )
    srv, rec, px = addon_proxy(proxy, sockdir, [script], lines)
    slow = wire.connect(px)
    slow.sendall(wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, struct.pack("=II", 0, 0)))
    time.sleep(0.1)  # the hook is now sleeping on the first connection's thread
    t0 = time.monotonic()
    fe = Frontend(wire.connect(px))
    fe.call(wire.GET_FEATURES)
    fe.call(wire.GET_PROTOCOL_FEATURES)
    assert time.monotonic() - t0 < 0.5
    assert recv(slow).request == wire.GET_VRING_BASE  # its reply, after the hook returned
    fe.close()
    slow.close()
    (n,) = [n for n in addon_notes(rec) if n["action"] == "slow"]
    assert "took 1.5 s" in n["text"] and any("took 1.5 s" in line for line in lines)


def test_hooks_see_the_session(sockdir, proxy, backend_server):
    """connection_open/close are called once per connection; flow.session is the decoder's."""
    backend_server()
    out = os.path.join(sockdir, "seen.txt")
    script = write_script(
        sockdir,
        (
            "def connection_open(flow):\n"
            f"    open({out!r}, 'a').write(f'open {{flow.conn}}\\n')\n"
            "def message(flow, msg):\n"
            "    pass\n"
            "def connection_close(flow):\n"
            "    s = flow.session\n"
            f"    open({out!r}, 'a').write(f'close {{flow.conn}} {{flow.features:#x}} '\n"
            "        f'{len(flow.memory)} {sorted(flow.vrings)} {s.protocol_acked:#x}\\n')\n"
        ),
    )
    srv, rec, px = addon_proxy(proxy, sockdir, [script])
    fe = Frontend(wire.connect(px))
    fe.handshake(queues=2)
    fe.close()
    wait_until(lambda: os.path.exists(out) and "close" in Path(out).read_text())
    wait_until(lambda: bool(rec.conns()), what="the connection's frames in the capture")
    conn = rec.conns()[0]  # (numbered per process)
    assert Path(out).read_text().split("\n")[:2] == [
        f"open {conn}",
        f"close {conn} {(1 << 32) | (1 << 30):#x} 1 [0, 1] {0x601 | 8 | 32:#x}",
    ]


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("def message(flow, msg)\n    pass\n", "addon.py:1:23: syntax error: expected ':'"),
        ("def message(flow):\n    pass\n", "addon.py:1: message(flow) must take (flow, msg)"),
        ("def connection_open():\n    pass\n", "connection_open() must take (flow)"),
        ("x = 1\n", "defines none of the hooks"),
        ("import nosuchmodule_xyz\n", "addon.py:1: failed to load: ModuleNotFoundError"),
    ],
)
def test_bad_scripts_refused(tmp_path, source, expect):
    path = write_script(str(tmp_path), source)
    with pytest.raises(AddonError) as err:
        load_addons(path)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_bad_script_refused_at_start_with_one_line(tmp_path):
    path = write_script(str(tmp_path), "def message(flow):\n    pass\n")
    px, be = str(tmp_path / "px.sock"), str(tmp_path / "be.sock")
    p = run_proxy(*proxy_options(px, be, "--script", path, quiet=False), timeout=20)
    assert p.returncode != 0 and not os.path.exists(px)
    assert p.stderr.strip().count("\n") == 0, p.stderr
    assert "message(flow) must take (flow, msg)" in p.stderr


def test_addons_object_list(tmp_path):
    """mitmproxy style: a module-level ``addons`` list of objects with hook methods."""
    path = write_script(
        str(tmp_path),
        ("class Counter:\n    def message(self, flow, msg):\n        pass\naddons = [Counter()]\n"),
    )
    (a,) = load_addons(path)
    assert a.name == "addon.py:Counter" and set(a.hooks) == {"message"}


def test_unknown_field_is_an_error_not_a_silent_zero(sockdir, proxy):
    lines: list[str] = []
    fe, be, srv, rec = pair(
        sockdir, proxy, ("def message(flow, msg):\n    msg.answer({'num': 7})\n"), lines
    )
    msg = wire.pack(wire.GET_QUEUE_NUM)
    fe.sendall(msg)
    assert recv(be).raw == msg  # forwarded unchanged, not answered with 0
    assert "GET_QUEUE_NUM reply has no field 'num' (fields: num_queues)" in lines[0]


def test_bad_raw_is_an_error_and_the_link_lives(sockdir, proxy):
    fe, be, srv, rec = pair(
        sockdir,
        proxy,
        (
            "def message(flow, msg):\n"
            "    msg.raw = 'not bytes' if msg.name == 'SET_OWNER' else b'short'\n"
        ),
        [],
    )
    for req in (wire.SET_OWNER, wire.RESET_OWNER if hasattr(wire, "RESET_OWNER") else 4):
        msg = wire.pack(req)
        fe.sendall(msg)
        assert recv(be).raw == msg
    assert [n["error"].split(":")[0] for n in addon_notes(rec, 2)] == ["TypeError", "ValueError"]


def test_no_script_no_rule_set():
    """Without --rule/--rules/--script nothing is loaded: the relay keeps its fast path."""
    import argparse

    from vuinspect.commands.proxy import configure, load_rules

    p = argparse.ArgumentParser()
    configure(p)
    assert load_rules(p.parse_args(["--listen", "a", "--connect", "b"])) is None
    args = p.parse_args(
        [
            "--listen",
            "a",
            "--connect",
            "b",
            "--script",
            os.path.join(EXAMPLES, "latency.py"),
            "--no-tui",
        ]
    )
    ruleset = load_rules(args)
    assert ruleset and not ruleset.rules and [a.name for a in ruleset.addons] == ["latency.py"]


def test_stop_does_not_wait_for_a_hung_hook(sockdir, proxy, backend_server):
    backend_server()
    script = write_script(sockdir, ("import time\ndef message(flow, msg):\n    time.sleep(60)\n"))
    srv, rec, px = addon_proxy(proxy, sockdir, [script], [])
    fe = wire.connect(px)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.stop(timeout=1.0)
    assert time.monotonic() - t0 < 2
    fe.close()
