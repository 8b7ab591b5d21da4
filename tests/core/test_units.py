"""units.py: the one duration syntax, as rule delays and the proxy's --rings read it."""

from __future__ import annotations

import argparse

import pytest

from vuinspect.commands.proxy import connect_timeout as seconds
from vuinspect.commands.proxy import rings_interval
from vuinspect.rules import RuleError, parse_rule
from vuinspect.units import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("100us", 1e-4), ("100µs", 1e-4), ("1m", 60.0), (".25", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "2 h", "-1s", "1e-3", "2S", "ms5"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_rings_interval_reads_the_same_syntax() -> None:
    assert rings_interval("off") == 0.0 and rings_interval("ON") == 0.1
    assert rings_interval("100ms") == pytest.approx(0.1)
    assert rings_interval(" 0.5 S ") == pytest.approx(0.5)
    assert rings_interval("0.25") == pytest.approx(0.25)
    assert rings_interval("1m") == pytest.approx(60.0)
    for bad in ("0.5ms", "61s", "fast", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            rings_interval(bad)


def test_connect_timeout_reads_the_same_syntax() -> None:
    assert seconds("3") == 3.0 and seconds(" 0.5 ") == 0.5 and seconds("0") == 0.0
    assert seconds("250ms") == pytest.approx(0.25)
    for bad in ("-1", "2h", "3601", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)


def test_rule_delays_read_the_same_syntax() -> None:
    assert parse_rule("delay 250ms: name == SET_OWNER").delay_s == pytest.approx(0.25)
    with pytest.raises(RuleError, match="not a duration"):
        parse_rule("delay 2h: name == SET_OWNER")
