"""Escaping gaps the fuzz campaign found (G1): lone surrogates from JSON ``\\u`` escapes,
U+061C ARABIC LETTER MARK, a close reason in a two-pass expert text, frame comments.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vuinspect.capture import CaptureReader, CaptureWriter
from vuinspect.frames import Frame, event_frame, ring_frame
from vuinspect.render import ESCAPES, safe_text

from .conftest import EVIL, cli, raw_in

pytestmark = pytest.mark.timeout(60)

TS = 1_764_000_000_000_000_000
GET_FEATURES = struct.pack("<III", 1, 1, 0)
LUA = Path(__file__).resolve().parents[2] / "dissectors" / "vhost_user.lua"
#: Unicode's Bidi_Control property (PropList.txt): what reorders the text a reader sees.
BIDI_CONTROL = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
#: A lone surrogate, one that stdout writes as the raw byte 0x9B (8-bit CSI), the mark.
ODD = "\ud800L\udc9b31m\u061c"
ODD_SHOWN = "\\ud800L\\udc9b31m\\u061c"
TSHARK = pytest.mark.skipif(shutil.which("tshark") is None or not LUA.exists(), reason="tshark")


def test_safe_text_escapes_bidi_controls_and_surrogates() -> None:
    assert [c for c in BIDI_CONTROL if c not in ESCAPES] == []
    assert safe_text(ODD) == ODD_SHOWN
    assert safe_text("\udfff\ud83d\ude00") == "\\udfff\\ud83d\\ude00"  # (json.loads pairs them)
    assert safe_text("a😀é") == "a😀é"


def _capture(path: Path) -> Path:
    with CaptureWriter(path) as w:
        w.write(event_frame("open", TS, 1, {"label": f"L{ODD}", "device": "blk"}))
        w.write(Frame(TS + 1, 1, "main", "f2b", GET_FEATURES))
        w.write(event_frame("note", TS + 2, 1, {"text": f"N{ODD}", "rule": f"r{ODD}"}))
        sample = {"vring": 0, "ts_ns": TS + 3, "layout": "split", "num": 256, "event": ODD}
        w.write(ring_frame(TS + 3, 1, sample))
        w.write(event_frame("close", TS + 4, 1, {"reason": f"R{ODD}", "by": "backend"}))
    return path


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--stats"],
        ["--rings"],
        ["-T", "fields", "-e", "payload.label", "-e", "payload.text", "-e", "payload.reason"],
    ],
    ids=["text", "stats", "rings", "fields"],
)
def test_read_shows_surrogates_and_the_arabic_mark_escaped(tmp_path: Path, args) -> None:
    """Before: UnicodeEncodeError (exit 1) for U+D800; U+DC9B reached the terminal as 0x9B."""
    res = cli("read", *args, str(_capture(tmp_path / "odd.pcapng")))
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-400:]
    out = res.stdout.decode("utf-8")  # strict: no byte a surrogate was written as
    assert "\u061c" not in out
    assert ODD_SHOWN in out


async def test_tui_shows_surrogates_and_the_arabic_mark_escaped(tmp_path: Path) -> None:
    from tui.conftest import screen_text, settle

    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.sources import FileSource

    app = VuInspectApp(FileSource(_capture(tmp_path / "odd.pcapng")), poll_interval=3600)
    texts = []
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        for frame in (1, 3, 5):  # the open (label), note and close rows, each with its detail
            app.jump_to_frame(frame)
            await pilot.pause()
            texts.append(screen_text(app))
        for view in ("connections", "stats"):
            app.action_view(view)
            await pilot.pause()
            texts.append(screen_text(app))
        assert app.is_running
    joined = "\n".join(texts)
    assert not [c for c in joined if c == "\u061c" or "\ud800" <= c <= "\udfff"]
    assert joined.count(ODD_SHOWN) >= 3


def _tshark(path: Path, *args: str, lua: bool = True) -> str:
    """tshark's output (with our dissector), as UTF-8: strict, no CESU-8 surrogate in the tree."""
    dissector = ["-X", f"lua_script:{LUA}"] if lua else []
    return subprocess.check_output(
        ["tshark", "-r", str(path), *dissector, *args], timeout=30
    ).decode()


@pytest.mark.tshark
@TSHARK
def test_lua_tree_shows_surrogates_and_the_arabic_mark_as_read_does(tmp_path: Path) -> None:
    out = _tshark(_capture(tmp_path / "odd.pcapng"), "-V", "-O", "vhost_user")
    assert "\u061c" not in out
    for text in (f"L{ODD}", f"N{ODD}", f"R{ODD}"):
        assert safe_text(text) in out, text


@pytest.mark.tshark
@TSHARK
def test_a_close_reason_in_a_two_pass_expert_text_is_escaped_once(tmp_path: Path) -> None:
    """Before: ``-2 -V`` printed "connection ended before the reply (<reason>)" raw."""
    path = tmp_path / "close.pcapng"
    with CaptureWriter(path) as w:
        w.write(event_frame("open", TS, 1, {"label": "c", "device": "blk"}))
        w.write(Frame(TS + 1, 1, "main", "f2b", GET_FEATURES))  # its reply never comes
        w.write(event_frame("close", TS + 2, 1, {"reason": f"R{EVIL}\\x1b", "by": "backend"}))
    out = _tshark(path, "-2", "-V", "-O", "vhost_user")
    assert not raw_in(out), raw_in(out)
    res = cli("read", "--json", str(path))
    assert res.returncode == 0, res.stderr
    texts = [
        p["text"]
        for line in res.stdout.decode().splitlines()
        for p in json.loads(line).get("problems", ())
        if isinstance(p, dict) and p.get("code") == "missing_reply"
    ]
    assert texts and "connection ended before the reply" in texts[0]
    assert f"[Expert Info (Error/Sequence): {safe_text(texts[0])}]" in out  # not escaped twice


def test_frame_comments_are_written_escaped_line_by_line(tmp_path: Path) -> None:
    """Before: a comment's ESC, BEL and bidi override went into the file raw (tshark -V shows it)."""
    path = tmp_path / "comment.pcapng"
    comment = "slow \x1b[2J\x1b]0;PWN\x07\u202eC\nsecond line\tend"
    with CaptureWriter(path) as w:
        w.write(Frame(TS, 1, "main", "f2b", GET_FEATURES, comment=comment))
        w.write(Frame(TS + 1, 1, "main", "f2b", GET_FEATURES, comment="plain, é 😀\nline 2"))
    got = [f.comment for f in CaptureReader(path)]
    assert got == [
        "slow \\x1b[2J\\x1b]0;PWN\\x07\\u202eC\nsecond line\\tend",
        "plain, é 😀\nline 2",
    ]
    if shutil.which("tshark"):
        out = _tshark(path, "-V", lua=False)
        assert "Packet comments" in out and not raw_in(out), raw_in(out)
