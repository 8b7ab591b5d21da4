"""Interactive intercept: the engine holds what the TUI's ``i`` filter matches until a/e/d/A.

The engine side runs an in-process proxy between raw front-end and back-end sockets
(the control commands are the JSON lines the TUI sends); the TUI side is a Pilot test
on a live source fed the frames such a proxy records, and a snapshot of what a person
sees (the prompt typed into, a held row).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Input

from tests.proxy.conftest import proxy, relayed_pair, sockdir, wait_until  # noqa: F401
from vuinspect.commands.proxy_engine import serve_control, with_intercept
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame, event_info
from vuinspect.holds import Hold, Intercept, reencode
from vuinspect.pipeline import Pipeline
from vuinspect.testing import wire
from vuinspect.testing.procs import proxy_command
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.intercept import Control, EditScreen, Holds, _shown, edited_payload
from vuinspect.tui.samples import Script, blk_handshake
from vuinspect.tui.sources import FileSource, FrameListSource, LiveSource

from .conftest import screen_text, settle, until
from .test_terminal import ROOT, Tmux

pytestmark = pytest.mark.timeout(60)

VRING_STATE = struct.Struct("=II")


def intercepted(proxy, filter_text: str = ""):  # noqa: F811 - the fixture's maker
    """A ``proxy`` maker whose server carries an Intercept (as the TUI's engine does)."""
    icpt = Intercept()

    def make(routes, **kw):
        srv, rec = proxy(routes, **kw)
        with_intercept(srv, None, icpt)  # as the engine does for its TUI
        return srv, rec

    if filter_text:
        icpt.set_filter(filter_text)
    return make, icpt


def nothing_within(sock: socket.socket, seconds: float = 0.5) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(None)
    return False


def holds(rec, action: str | None = None) -> list[dict]:
    return [
        i
        for i in rec.events("note")
        if str(i.get("rule", "")).startswith("intercept") and action in (None, i["action"])
    ]


def send(icpt: Intercept, **cmd) -> None:
    """A control line as the TUI writes it (through the same parser)."""
    assert icpt.command(json.dumps(cmd).encode()) is None, icpt.errors


def vring_base(index: int = 0, num: int = 0) -> bytes:
    return wire.pack(wire.GET_VRING_BASE, wire.FLAG_VERSION, VRING_STATE.pack(index, num))


def held_one(icpt: Intercept) -> int:
    wait_until(lambda: len(icpt.held) == 1, what="a held message")
    return next(iter(icpt.held))


def test_held_until_accepted(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy)
    fe, be, srv, rec = relayed_pair(sockdir, make)
    send(icpt, cmd="set-intercept", filter="name == GET_VRING_BASE")
    fe.sendall(vring_base(1))
    number = held_one(icpt)
    assert nothing_within(be)  # held: the back-end does not get it
    # The other direction flows while this one waits.
    be.sendall(wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack(1)))
    assert wire.recv_within(fe, 1.0).request == wire.GET_FEATURES
    send(icpt, cmd="accept", id=number)
    got = wire.recv_within(be, 2.0)
    assert got.raw == vring_base(1)
    wait_until(lambda: len(holds(rec, "accept")) == 1, what="the accept note")
    (held,) = holds(rec, "hold")
    assert held["hold"] == number and held["original"] == vring_base(1).hex()
    assert icpt.held == {}


def test_no_cost_while_no_filter_is_set(sockdir, proxy):  # noqa: F811
    """No filter: the links keep their fast path; a filter makes them judge, clearing it
    stops that (existing connections included)."""
    make, icpt = intercepted(proxy)
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert wire.recv_within(be, 2.0).request == wire.GET_FEATURES
    (link,) = srv._links
    assert link._rules is None and not any(link._slow)
    send(icpt, cmd="set-intercept", filter="name == GET_VRING_BASE")
    assert link._rules is not None
    send(icpt, cmd="set-intercept", filter="")
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert wire.recv_within(be, 2.0).request == wire.GET_FEATURES
    assert link._rules is None
    wait_until(lambda: not link._slow[0], what="the fast path again (the front-end side)")


def test_other_messages_pass(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.GET_FEATURES))
    assert wire.recv_within(be, 1.0).request == wire.GET_FEATURES
    assert icpt.held == {}


def test_drop_closes_fds_and_next_message_flows(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_CALL")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    r, w = os.pipe()
    try:
        wire.send_raw(fe, wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(1)), [w])
        os.close(w)
        number = held_one(icpt)
        assert nothing_within(be, 0.3)
        send(icpt, cmd="drop", id=number)
        fe.sendall(wire.pack(wire.SET_OWNER))
        assert wire.recv_within(be, 2.0).request == wire.SET_OWNER  # the dropped one never arrived
        os.set_blocking(r, False)
        wait_until(lambda: _eof(r), what="the dropped message's fd to be closed")
    finally:
        os.close(r)
    wait_until(lambda: len(holds(rec, "drop")) == 1, what="the drop note")
    assert holds(rec, "drop")[0]["new"] == ""


def _eof(fd: int) -> bool:
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


def test_edit_reencodes_the_payload(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_NUM")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 256)))
    number = held_one(icpt)
    payload = dict(icpt.held[number].msg.payload)
    assert payload["num"] == 256
    payload["num"] = 128
    send(icpt, cmd="edit", id=number, payload=payload)
    got = wire.recv_within(be, 2.0)
    assert got.raw == wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 128))
    wait_until(lambda: len(holds(rec, "edit")) == 1, what="the edit note")
    (note,) = holds(rec, "edit")
    assert note["new"] == got.raw.hex() and note["original"] != note["new"]


def test_edit_with_an_unknown_field_is_refused_and_stays_held(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == SET_VRING_NUM")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 256)))
    number = held_one(icpt)
    err = icpt.command(json.dumps({"cmd": "edit", "id": number, "payload": {"bogus": 1}}))
    assert err and "bogus" in err
    assert number in icpt.held and nothing_within(be, 0.2)
    send(icpt, cmd="accept-all")
    assert wire.recv_within(be, 2.0).request == wire.SET_VRING_NUM


def test_order_kept_behind_a_held_message(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(0))
    fe.sendall(wire.pack(wire.SET_OWNER))  # waits behind the held one, as for a slow peer
    number = held_one(icpt)
    assert nothing_within(be, 0.3)
    send(icpt, cmd="accept", id=number)
    assert wire.recv_within(be).request == wire.GET_VRING_BASE
    assert wire.recv_within(be).request == wire.SET_OWNER


def test_clearing_the_filter_releases(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(0))
    held_one(icpt)
    send(icpt, cmd="set-intercept", filter="")
    assert wire.recv_within(be, 2.0).request == wire.GET_VRING_BASE
    fe.sendall(vring_base(1))
    assert wire.recv_within(be, 2.0).request == wire.GET_VRING_BASE  # no longer held


def test_stop_releases_what_is_held(sockdir, proxy):  # noqa: F811
    make, icpt = intercepted(proxy, "name == GET_VRING_BASE")
    fe, be, srv, rec = relayed_pair(sockdir, make)
    fe.sendall(vring_base(3))
    held_one(icpt)
    t0 = time.monotonic()
    srv.stop()
    assert wire.recv_within(be, 2.0).raw == vring_base(3)  # a stop (the user quitting) accepts it
    assert time.monotonic() - t0 < 2.0
    assert [n["text"] for n in holds(rec, "accept")] == ["intercept #1: accepted (proxy stopped)"]


def test_form_round_trip_of_an_array_payload():
    """The form shows a list field as JSON; edited, it re-encodes by the tables (what
    the engine does with the payload the form sends)."""
    data = build(
        "main",
        wire.SET_MEM_TABLE,
        {"regions": [{"guest_phys_addr": 0, "memory_size": 0x1000, "userspace_addr": 0x7F0000}]},
    )
    (msg,) = Pipeline().feed(Frame(1, 1, "main", "f2b", data, ("memfd:guest",)))
    texts = {k: _shown(k, v) for k, v in msg.payload.items()}
    assert json.loads(texts["regions"])[0]["memory_size"] == 0x1000
    texts["regions"] = texts["regions"].replace("4096", "8192")
    new = reencode(msg, data, edited_payload(msg.payload, texts))
    (again,) = Pipeline().feed(Frame(2, 1, "main", "f2b", new, ("memfd:guest",)))
    assert again.payload["regions"][0]["memory_size"] == 0x2000 and len(new) == len(data)
    with pytest.raises(ValueError, match="nregions"):
        edited_payload(msg.payload, {"nregions": "one"})


# -- the TUI: keys, the control socket, the held rows ------------------------------------------
class Live:
    """An in-process proxy whose frames feed a live TUI source, as the viewer child's feed does,
    and whose intercept is served from a control socket the app writes to."""

    def __init__(self, sockdir, proxy) -> None:  # noqa: F811 - the fixtures
        self.source = LiveSource("intercept test")
        self.holds = Holds()
        self._lock = threading.Lock()
        make, self.icpt = intercepted(proxy)
        self.fe, self.be, self.srv, self.rec = relayed_pair(sockdir, self._with_sink(make))
        engine_end, tui_end = socket.socketpair()
        self.engine_end = engine_end
        self.thread = threading.Thread(target=serve_control, args=(engine_end, self.icpt))
        self.thread.start()
        self.control = Control(tui_end.detach())

    def _with_sink(self, make):
        def sink(frame) -> None:
            with self._lock:  # (rows are counted in push order)
                self.holds.observe(frame)
                self.source.push(frame)

        return lambda routes, **kw: make(routes, sink=sink, **kw)

    def close(self) -> None:
        self.control.close()
        self.thread.join(5)
        self.engine_end.close()


def test_tui_keys_hold_accept_edit_drop_all(sockdir, proxy):  # noqa: F811
    live = Live(sockdir, proxy)
    app = VuInspectApp(live.source, control=live.control, holds=live.holds, poll_interval=0.05)

    async def run() -> None:
        async with app.run_test(size=(130, 30)) as pilot:
            await pilot.press("i", *"name == GET_VRING_BASE or name == SET_VRING_NUM", "enter")
            await until(pilot, lambda: live.icpt.active, "the intercept filter to reach the engine")
            # a: accept.  The row shows the hold; the back-end has nothing until then.
            live.fe.sendall(vring_base(1))
            await until(pilot, lambda: len(live.holds) == 1, "a held row")
            await pilot.pause(0.1)
            assert "HELD #1" in screen_text(app)
            assert nothing_within(live.be, 0.3)
            await pilot.press("a")
            assert wire.recv_within(live.be, 2.0).raw == vring_base(1)
            await until(pilot, lambda: len(live.holds) == 0, "the row to be released")
            await pilot.pause(0.1)
            assert "HELD #" not in screen_text(app)
            # d: drop; the next message flows.
            live.fe.sendall(vring_base(2))
            await until(pilot, lambda: len(live.holds) == 1, "a second held row")
            await pilot.press("d")
            live.fe.sendall(wire.pack(wire.SET_OWNER))
            assert wire.recv_within(live.be, 2.0).request == wire.SET_OWNER
            # e: the form, one input per decoded field; num edited, re-encoded.
            live.fe.sendall(
                wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 256))
            )
            await until(pilot, lambda: len(live.holds) == 1, "a held SET_VRING_NUM")
            await pilot.pause(0.1)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen), "the edit form")
            await pilot.press("tab", "ctrl+u", *"0x80", "enter")
            got = wire.recv_within(live.be, 2.0)
            assert got.raw == wire.pack(
                wire.SET_VRING_NUM, wire.FLAG_VERSION, VRING_STATE.pack(0, 128)
            )
            # A: all held go on, in order.
            live.fe.sendall(vring_base(3))
            await until(pilot, lambda: len(live.holds) == 1, "a held message again")
            await pilot.press("A")
            assert wire.recv_within(live.be, 2.0).raw == vring_base(3)
            # q with a message held: released as the TUI goes.
            live.fe.sendall(vring_base(4))
            await until(pilot, lambda: len(live.holds) == 1, "a message held at quit")
            await pilot.press("q")
        live.close()  # (the viewer's end closes when its process ends)
        assert wire.recv_within(live.be, 2.0).raw == vring_base(4)

    try:
        asyncio.run(run())
    finally:
        live.control.close()

    # What the TUI was fed (the capture): each step a note, in order.
    def actions() -> list[str]:
        frames = [live.source.frame(i) for i in range(len(live.source))]
        notes = [event_info(f) for f in frames if f.kind == "note"]
        return [n["action"] for n in notes if str(n.get("rule")).startswith("intercept")]

    wait_until(lambda: len(actions()) >= 10, what="the last note (frames reach the sink later)")
    assert actions() == ["hold", "accept", "hold", "drop", "hold", "edit"] + ["hold", "accept"] * 2


def test_keys_off_without_a_proxy(demo_path):
    """Viewing a file: i, a, e, d, A do nothing (there is no engine to ask)."""
    app = VuInspectApp(FileSource(demo_path), poll_interval=3600)

    async def run() -> None:
        async with app.run_test(size=(130, 30)) as pilot:
            await settle(pilot, app)
            await pilot.press("i")
            assert app.prompt_mode is None
            assert app.check_action("hold", ("accept",)) is False

    asyncio.run(run())


# -- what a person sees ---------------------------------------------------------------------------
def held_frames() -> list:
    """A blk handshake, then SET_VRING_ADDR held by an intercept: its note, then the message,
    as the engine records them (fixed clock)."""
    s = Script()
    blk_handshake(s, 1)
    icpt = Intercept()
    icpt.set_filter("name == SET_VRING_ADDR")
    data = build("main", wire.SET_VRING_ADDR, {"index": 0, "flags": 0, "desc_user_addr": 0x7F00})
    hold = Hold(1, icpt, "main", "f2b", data, None)
    info = icpt.note(hold, "hold", "held (waiting for a decision)", data, data)
    s.frames.append(event_frame("note", s._tick(None), 1, info))
    s.request(1, wire.SET_VRING_ADDR, {"index": 0, "flags": 0, "desc_user_addr": 0x7F00})
    return s.frames


def held_app() -> tuple[VuInspectApp, socket.socket]:
    frames = held_frames()
    held = Holds()
    for f in frames:
        held.observe(f)
    engine_end, tui_end = socket.socketpair()
    app = VuInspectApp(
        FrameListSource(frames),
        control=Control(tui_end.detach()),
        holds=held,
        poll_interval=3600,
    )
    return app, engine_end


@pytest.mark.parametrize("size", [(50, 12), (80, 24), (130, 40)], ids=["50x12", "80x24", "130x40"])
def test_snapshot_intercept_prompt_and_held_row(snap_compare, size) -> None:
    """The held row (H, HELD #1, its note above) and the i prompt open and typed into."""
    app, engine_end = held_app()

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.jump_to_frame(len(app.model.source))
        await pilot.pause()
        await pilot.press("i", *"name == SET_VRING_")
        await pilot.pause()
        await pilot.pause(0.1)  # (a completion suggestion arrives from a worker)

    try:
        assert snap_compare(app, terminal_size=size, run_before=run_before)
    finally:
        engine_end.close()


def test_snapshot_edit_form(snap_compare) -> None:
    """e on the held row: the decoded fields, one input each."""
    app, engine_end = held_app()

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        app.jump_to_frame(len(app.model.source))
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    finally:
        engine_end.close()


def test_edit_form_says_what_does_not_encode() -> None:
    """A value that is not a number stays in the form with its reason; Esc sends nothing."""
    app, engine_end = held_app()

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            app.jump_to_frame(len(app.model.source))
            await pilot.pause()
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen), "the edit form")
            await pilot.press("ctrl+u", *"two", "enter")
            await pilot.pause()
            assert isinstance(app.screen, EditScreen)
            assert "index: invalid literal for int()" in screen_text(app)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, EditScreen)

    try:
        asyncio.run(run())
        engine_end.setblocking(False)
        with pytest.raises(BlockingIOError):
            engine_end.recv(1)  # no command was sent
    finally:
        engine_end.close()


def test_edit_form_escapes_what_a_peer_could_send_and_keeps_it_unless_edited() -> None:
    """A decoded string with control characters (none of the decoder's names has one, but the
    form must not trust that) is shown escaped and flagged; untouched, it goes back as it
    was; edited, only printable text is taken."""
    data = build("main", wire.SET_VRING_ENABLE, {"index": 0, "num": 1})
    (msg,) = Pipeline().feed(Frame(1, 1, "main", "f2b", data, ()))
    msg.payload["num_name"] = "en\x1b[2Jable\x07"
    original = dict(msg.payload)
    got: list[dict | None] = []

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(EditScreen(1, msg, data), got.append)

    async def run() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, EditScreen), "the edit form")
            values = [i.value for i in app.screen.query(Input)]
            assert all(v.isprintable() for v in values), values
            assert "en\\x1b[2Jable\\x07" in values
            text = screen_text(app)
            assert "num_name !" in text and "non-printable characters shown escaped" in text
            await pilot.press("enter")
            await until(pilot, lambda: bool(got), "the form to close")

    asyncio.run(run())
    assert got == [original]  # the escapes did not replace the string
    with pytest.raises(ValueError, match="num_name: non-printable"):
        edited_payload(msg.payload, {"num_name": "x\x1by"}, {"num_name": "en\\x1b[2Jable\\x07"})


# -- a real terminal: the proxy's own TUI child, its control socket, its engine ----------------
def _proxy_in_tmux(tmux: Tmux, where: str) -> tuple[socket.socket, socket.socket]:
    """vuinspect proxy with its TUI in tmux; (front-end, back-end) sockets through it."""
    be_path, px_path = os.path.join(where, "be.sock"), os.path.join(where, "px.sock")
    listener = wire.listen(be_path)
    try:
        tmux(
            "new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "-c", str(ROOT),
            f"{shlex.join(proxy_command(px_path, be_path, quiet=False, no_tui=False))}; "
            f"echo rc=$?; sleep 30",
        )  # fmt: skip
        tmux.wait_for(lambda s: "Quit" in s)
        fe = wire.connect(px_path, retries=100)
        listener.settimeout(10)
        be, _ = listener.accept()
    finally:
        listener.close()
    return fe, be


def _set_intercept(tmux: Tmux, text: str) -> None:
    deadline = time.monotonic() + 30
    while "hold messages matching" not in tmux.screen():  # (the app may still be starting)
        assert time.monotonic() < deadline, tmux.screen()
        tmux("send-keys", "-t", "t", "i")
        time.sleep(0.5)
    tmux("send-keys", "-t", "t", "-l", text)
    tmux.wait_for(lambda s: text in s)
    tmux("send-keys", "-t", "t", "Enter")
    tmux.wait_for(lambda s: f"holding: {text}" in s)


def _pids(*words: str) -> list[int]:
    """Our processes whose command line has all ``words`` (the test's own socket path)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if all(any(w in a for a in argv) for w in words):
                found.append(int(entry))
    return found


@contextlib.contextmanager
def _one_held_in_tmux(
    where: str, tmp_path: Path
) -> Iterator[tuple[Tmux, socket.socket, socket.socket]]:
    """vuinspect proxy with its TUI in tmux, intercepting GET_VRING_BASE, ``vring_base(1)``
    sent and shown held (HELD #1): (tmux, front-end socket, back-end socket)."""
    tmux = Tmux(f"vuinspect-icpt-{tmp_path.name}")
    try:
        fe, be = _proxy_in_tmux(tmux, where)
        try:
            _set_intercept(tmux, "name == GET_VRING_BASE")
            fe.sendall(vring_base(1))
            tmux.wait_for(lambda s: "HELD #1" in s, 15)
            yield tmux, fe, be
        finally:
            fe.close()
            be.close()
    finally:
        tmux("kill-server")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_intercept_in_a_real_terminal(sockdir, tmp_path):  # noqa: F811
    """vuinspect proxy with its TUI in tmux: i, a held row, a; q releases what is held."""
    with _one_held_in_tmux(sockdir, tmp_path) as (tmux, fe, be):
        tmux.wait_for(lambda s: "HELD #1 GET_VRING_BASE" in s and "NOTE" in s, 15)
        assert nothing_within(be, 0.5)
        tmux("send-keys", "-t", "t", "a")
        assert wire.recv_within(be, 5.0).raw == vring_base(1)
        tmux.wait_for(lambda s: "HELD #1" not in s)
        fe.sendall(vring_base(2))
        tmux.wait_for(lambda s: "HELD #2" in s)
        tmux("send-keys", "-t", "t", "q")
        assert wire.recv_within(be, 10.0).raw == vring_base(2)  # released as the TUI quits
        screen = tmux.wait_for(lambda s: "rc=" in s)
        assert "rc=0" in screen and "intercept: 2 held, 2 accepted" in screen, screen


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_a_dead_tui_releases_what_is_held(sockdir, tmp_path):  # noqa: F811
    """The TUI child killed with a message held: it goes on, and nothing more is held."""
    with _one_held_in_tmux(sockdir, tmp_path) as (tmux, fe, be):
        viewers = _pids(sockdir, "--control-fd")
        assert len(viewers) == 1, [Path(f"/proc/{p}/cmdline").read_bytes() for p in viewers]
        (viewer,) = viewers
        engine = int(Path(f"/proc/{viewer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(viewer, signal.SIGKILL)
        assert wire.recv_within(be, 5.0).raw == vring_base(1)
        fe.sendall(vring_base(2))
        assert wire.recv_within(be, 5.0).raw == vring_base(2)  # the intercept went with the TUI
        os.kill(engine, signal.SIGTERM)  # (the viewer's parent: the proxy itself)
        screen = tmux.wait_for(lambda s: "rc=" in s)
        assert "rc=0" in screen, screen
        assert "intercept: 1 held, 1 accepted" in screen, screen
