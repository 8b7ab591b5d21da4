"""lines.py: tshark's -t time formats, one text line per message (ring/notify messages as
the timeline shows them, escaped), the summary printer that skips routine samples."""

from __future__ import annotations

import io

from vuinspect.frames import notify_frame
from vuinspect.lines import TIME_FORMATS, summary_printer, text_line, time_formatter
from vuinspect.pipeline import Pipeline
from vuinspect.render import format_ts
from vuinspect.samples import device_start

T = 1_764_000_000_123_456_789  # 2025-11-24 16:00:00.123456789 UTC


def test_time_formats_like_tshark():
    assert TIME_FORMATS == ("ad", "a", "r", "d", "e")
    assert time_formatter("e")(T) == format_ts(T)
    assert time_formatter("ad")(T) == "2025-11-24 16:00:00.123456789"
    assert time_formatter("a")(T) == "16:00:00.123456789"
    rel = time_formatter("r")
    assert [rel(T + 5), rel(T + 1_500_000_005)] == ["0.000000", "1.500000"]
    delta = time_formatter("d")
    assert [delta(T), delta(T + 2_000_000), delta(T + 2_500_000)] == [
        "0.000000",
        "0.002000",
        "0.000500",
    ]


def test_a_time_no_calendar_holds_falls_back_to_seconds():
    huge = 10**30  # past datetime's range: no exception, the epoch text
    assert time_formatter("ad")(huge) == format_ts(huge)
    assert time_formatter("a")(huge) == format_ts(huge)


def _messages() -> list:
    pipeline = Pipeline()
    return [m for f in device_start() for m in pipeline.feed(f)]


def test_a_time_format_changes_only_the_time_column():
    msgs = _messages()
    plain, utc = text_line(), text_line("a")
    for msg in msgs[:6]:
        a, b = plain(msg), utc(msg)
        frame, ts, rest = a.split(None, 2)
        assert b.split(None, 2) == [frame, time_formatter("a")(msg.ts_ns), rest]


def _notify(signal: str, ts: int = T):
    (msg,) = Pipeline().feed(notify_frame(ts, 1, 0, signal, 3, ts - 1000, ts))
    return msg


def test_a_notify_line_and_its_problems_are_escaped():
    ok = _notify("kick")
    assert not ok.problems
    assert (
        text_line()(ok)
        == f"{ok.frame:>6} {format_ts(T):>12} c1   NOTIFY  vring 0 kick x3 over 0.0 ms"
    )
    bad = _notify("kick\x1b[31m")
    line = text_line("r", detail=True)(bad)
    assert "\x1b" not in line and "\\x1b" in line
    assert " !! ring_bad_sample: " in line and "0.000000" in line


def test_summary_printer_prints_messages_not_routine_samples():
    out = io.StringIO()
    show = summary_printer(out, device="blk")
    frames = device_start()
    for f in frames:
        show(f)
    end = frames[-1].ts_ns
    show(notify_frame(end + 1, 1, 0, "kick", 3, end, end + 1))  # routine: not shown
    show(notify_frame(end + 2, 1, 0, "kick\x1b", 3, end, end + 2))  # a problem: shown
    lines = out.getvalue().splitlines()
    assert len(lines) == len(_messages()) + 1
    assert lines[1].split()[-1] == "GET_FEATURES"
    assert "NOTIFY" in lines[-1] and "ring_bad_sample" in lines[-1]
    assert sum("NOTIFY" in x for x in lines) == 1
