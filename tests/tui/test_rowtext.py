"""tui/rowtext.py without Textual: the row's column texts and styles, the time and latency
formats, cells padded and cut to their columns."""

from __future__ import annotations

from rich.cells import cell_len

from vuinspect.tui.model import Model
from vuinspect.tui.rowtext import (
    COLUMNS,
    FIXED_WIDTH,
    format_latency,
    format_time,
    header_cells,
    layout_cells,
    row_cells,
)
from vuinspect.tui.samples import demo_frames
from vuinspect.tui.sources import FrameListSource

T = 1_764_000_000_123_456_789  # 16:00:00.123456 UTC


def test_latency_units():
    assert [format_latency(x) for x in (None, 25.4, 999.4, 1500.0, 2_500_000.0)] == [
        "",
        "25µs",
        "999µs",
        "1.5ms",
        "2.50s",
    ]


def test_time_modes():
    assert format_time(T, "abs", None, None) == "16:00:00.123456"
    assert format_time(T + 1_500_000_000, "rel", T, None) == "1.500000"
    assert format_time(T, "delta", None, T - 2000) == "+0.000002"
    assert format_time(T, "delta", None, None) == "+0.000000"
    assert format_time(10**30, "abs", None, None) == "1e+30ns"  # past the calendar: still fits


def test_cells_fit_their_columns():
    cells = [("x" * 40, "plain")] * len(COLUMNS)
    out = layout_cells(cells, FIXED_WIDTH + 20)
    texts = [t for t, _ in out]
    assert sum(cell_len(t) for t in texts) == FIXED_WIDTH + 20
    name_col = [c.key for c in COLUMNS].index("name")
    assert texts[2 * name_col] == "x" * 29 + "…"  # cut with an ellipsis to its width
    frame_col = [c.key for c in COLUMNS].index("frame")
    short = list(cells)
    short[frame_col] = ("12", "dim")
    assert layout_cells(short, FIXED_WIDTH)[2 * frame_col][0] == "     12"  # right-aligned
    assert [t for t, _ in header_cells("rel")][[c.key for c in COLUMNS].index("time")] == (
        "Time (s)"
    )


def test_row_cells_of_a_request_a_reply_and_a_held_message():
    model = Model(FrameListSource(demo_frames()))
    model.run_to_end()
    keys = [c.key for c in COLUMNS]

    def row(pos: int, **kw) -> dict[str, tuple[str, str]]:
        args = {"time_mode": "abs", "base_ns": None, "marked": False, **kw}
        return dict(zip(keys, row_cells(model, pos, **args), strict=True))

    reply_pos = next(
        p for p in range(len(model)) if (m := model.message(model.row_at(p))) and m.reply
    )
    reply = row(reply_pos)
    msg = model.message(model.row_at(reply_pos))
    assert reply["name"][0] == f"{msg.name} reply" and reply["latency"][0].endswith("µs")
    assert reply["frame"] == (str(model.row_at(reply_pos) + 1), "dim")
    assert reply["dir"][0] == "←" and reply["conn"][0] == f"c{msg.conn}"
    held = row(reply_pos, held=3, marked=False)
    assert held["name"] == (f"HELD #3 {msg.name} reply", "waiting") and held["mark"][0] == "H"
    assert row(reply_pos, marked=True)["mark"][0] == "●"
    problem_pos = next(
        p for p in range(len(model)) if (m := model.message(model.row_at(p))) and m.problems
    )
    bad = row(problem_pos)
    assert "  !! " in bad["summary"][0] and bad["problem"][1].startswith("problem-")
