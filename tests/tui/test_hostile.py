"""Texts and timestamps from a hostile capture: escaped, shown, never a crash (issue 11 items 5, 6).

A capture chooses its connection labels, note texts, fd descriptions and
timestamps.  None of them may drive the terminal (ESC sequences), forge an
output line (newline), inject Rich markup, or crash the TUI.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.frames import Frame, event_frame
from vuinspect.render import format_ts, safe_text
from vuinspect.tui.app import VuInspectApp
from vuinspect.tui.rowtext import format_time
from vuinspect.tui.samples import write_capture
from vuinspect.tui.sources import FileSource

from .conftest import screen_text, settle

EVIL = "\x1b]0;TITLE\x07\x1b[2J"
FORGED = "\n     99 0.000000000 c9   main    → FORGED"
MARKUP = "[bold red]x[/] [/nope]"


def hostile_frames() -> list[Frame]:
    ts = 1_764_000_000_000_000_000
    get_features = struct.pack("<III", 1, 1, 0)
    return [
        event_frame(
            "open",
            ts,
            1,
            {
                "label": f"/run/{EVIL}{MARKUP}.sock",
                "orientation": "frontend-connects",
                "device": "blk",
            },
        ),
        Frame(
            ts + 1, 1, "main", "f2b", struct.pack("<III", 5, 1, 0), (f"memfd:{EVIL}{MARKUP}",)
        ),  # SET_MEM_TABLE (cut) with an fd description
        Frame(ts + 2, 1, "main", "f2b", get_features),
        event_frame("note", ts + 3, 1, {"text": f"note {EVIL}{FORGED}"}),
        event_frame("close", ts + 4, 1, {"reason": f"bye{FORGED}{MARKUP}"}),
    ]


@pytest.fixture
def hostile_path(tmp_path: Path) -> Path:
    return Path(write_capture(tmp_path / "hostile.pcapng", hostile_frames()))


def test_safe_text_escapes_controls_and_keeps_the_rest() -> None:
    assert safe_text(EVIL) == "\\x1b]0;TITLE\\x07\\x1b[2J"
    assert safe_text("a\nb\tc\r\x9b\u202e") == "a\\nb\\tc\\r\\x9b\\u202e"
    plain = "/run/vhost/blk0.sock é µs →"
    assert safe_text(plain) is plain


def test_read_output_has_no_raw_escapes_or_forged_lines(hostile_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", str(hostile_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;TITLE" in out
    lines = out.splitlines()
    assert len(lines) == len(hostile_frames())  # no line forged by an embedded newline
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4, 5]


def test_read_json_stays_valid_json(hostile_path: Path) -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--json", str(hostile_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == len(hostile_frames())
    assert objs[0]["payload"]["label"] == f"/run/{EVIL}{MARKUP}.sock"  # the data, exactly


async def test_tui_rows_detail_and_views_show_texts_escaped(hostile_path: Path) -> None:
    app = VuInspectApp(FileSource(hostile_path), poll_interval=3600)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        texts = []
        for frame in (1, 2, 4, 5):
            app.jump_to_frame(frame)
            await pilot.pause()
            texts.append(screen_text(app))
        for view in ("state", "connections", "stats"):
            app.action_view(view)
            await pilot.pause()
            texts.append(screen_text(app))
        assert app.is_running
    for text in texts:
        assert "\x1b" not in text and "\x07" not in text and "FORGED\n" not in text
    joined = "\n".join(texts)
    assert "\\x1b]0;TITLE" in joined and "\\n     99" in joined
    assert MARKUP in joined  # shown as typed: not read as Rich markup
    assert joined.count("memfd:\\x1b") >= 2  # the row and the detail tree


# -- extreme timestamps ---------------------------------------------------------------


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) & 3)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) & 3)


def _packet(iface: int, ts: int, data: bytes) -> bytes:
    # exported PDU tag "vhost_user", then the vuinspect pseudo-header (docs/capture-format.md)
    name = b"vhost_user\0\0"
    pdu = struct.pack(">HH", 12, len(name)) + name + struct.pack(">HH", 0, 0)
    pdu += (
        b"VU"
        + bytes([1, 0])
        + struct.pack(">H", 14)
        + bytes([0, 0])
        + struct.pack(">I", 1)
        + bytes([0, 0])
        + data
    )
    body = struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(pdu), len(pdu)) + pdu
    return _block(6, body)


def extreme_capture(path: Path) -> Path:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_sec = _block(1, struct.pack("<HHI", 252, 0, 0) + _option(9, b"\x00") + b"\0\0\0\0")
    idb_off = _block(
        1,
        struct.pack("<HHI", 252, 0, 0)
        + _option(9, b"\x09")
        + _option(14, struct.pack("<q", 2**63 - 1))
        + b"\0\0\0\0",
    )
    msg = struct.pack("<III", 1, 1, 0)
    path.write_bytes(
        shb
        + idb_sec
        + idb_off
        + _packet(0, 2**64 - 1, msg)
        + _packet(1, 5, msg)
        + _packet(0, 2**40, msg)
    )
    return path


@pytest.mark.parametrize("ts", [2**64 * 10**9, (2**63 - 1) * 10**9 + 5, -(2**70), 2**63 - 1])
@pytest.mark.parametrize("mode", ["abs", "rel", "delta"])
def test_format_time_never_raises(ts: int, mode: str) -> None:
    text = format_time(ts, mode, 0, 0)
    assert text
    if mode == "abs" and abs(ts) > 2**64:
        assert text == f"{ts:.4g}ns" and len(text) <= 15
    assert format_ts(ts) and format_ts(ts, 0)


async def test_tui_shows_extreme_timestamps(tmp_path: Path) -> None:
    path = extreme_capture(tmp_path / "extreme.pcapng")
    app = VuInspectApp(FileSource(path), poll_interval=3600)
    async with app.run_test(size=(130, 30)) as pilot:
        await settle(pilot, app)
        assert len(app.model) == 3, app.model.error
        text = screen_text(app)
        for key in ("t", "t", "t", "2", "3", "4", "1"):
            await pilot.press(key)
            await pilot.pause()
            text += screen_text(app)
        assert app.is_running
    assert "1.845e+28ns" in text  # 2^64-1 s: nanoseconds, marked, in the time column


@pytest.mark.parametrize(
    "text",
    ["(" * 300 + "conn == 1" + ")" * 300, " or ".join(["conn == 1"] * 1000), "(" * 100_000],
    ids=["300-parens", "1000-terms", "100k-open"],
)
async def test_deep_or_long_filters_in_the_bar(tmp_path: Path, text: str) -> None:
    """Issue 11 item 7 in the TUI: while typing, a deep or long filter is an error or a filter."""
    from vuinspect.tui.filter_bar import FilterBar
    from vuinspect.tui.samples import demo_frames

    path = write_capture(tmp_path / "demo.pcapng", demo_frames())
    app = VuInspectApp(FileSource(path), poll_interval=3600)
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f")
        bar = app.query_one(FilterBar)
        bar.input.value = text
        await pilot.pause()
        await pilot.press("tab", "enter")
        await pilot.pause()
        assert app.is_running
        if bar.error is None:
            await settle(pilot, app)
            assert app.model.filter_text == text.strip()


async def test_comment_prompt_shows_the_captures_comment_escaped(tmp_path: Path) -> None:
    """``c`` pre-fills the prompt with the capture's opt_comment: escaped, as the tree shows it."""
    frame = Frame(1_764_000_000_000_000_000, 1, "main", "f2b", struct.pack("<III", 1, 1, 0))
    frame.comment = f"seen {EVIL} here"
    path = write_capture(tmp_path / "comment.pcapng", [frame])
    app = VuInspectApp(FileSource(Path(path)), poll_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        assert app.prompt_mode == "comment"
        text = screen_text(app)
    assert "\x1b" not in text
    assert "seen \\x1b]0;TITLE" in text
