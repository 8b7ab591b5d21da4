"""The extcap's dialog: the ``vuinspect proxy`` options it offers (--script, --capture-buffer)
reach the engine, and what cannot run together is refused with a message before anything
starts (Wireshark shows an extcap's stderr as the capture's error)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.capture.capfile import parse_size
from vuinspect.wireshark import extcap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    extcap.configure(parser)
    return parser.parse_args(["--capture", "--fifo", "/nonexistent/f", *argv])


def _paths(*argv: str) -> argparse.Namespace:
    """Options with both socket paths set (nothing is bound by engine_args)."""
    return _args("--listen", "/nonexistent/px.sock", "--connect", "/nonexistent/be.sock", *argv)


def test_the_dialog_offers_script_and_capture_buffer_and_the_parser_knows_every_call():
    text = extcap.config_text()
    calls = re.findall(r"\{call=(--[a-z-]+)\}", text)
    assert "--script" in calls and "--capture-buffer" in calls
    parser = argparse.ArgumentParser()
    extcap.configure(parser)
    known = {o for a in parser._actions for o in a.option_strings}
    assert set(calls) <= known


@pytest.mark.parametrize(
    "text", ["", "32M", "64MiB", "1g", "500000", " 8 k ", "2KB", "lots", "1T", "-1M", "1.5M", "M"]
)
def test_the_dialog_checks_the_capture_buffer_as_the_proxy_reads_it(text: str) -> None:
    try:
        parse_size(text)
        readable = True
    except ValueError:
        readable = False
    assert bool(re.fullmatch(extcap.SIZE_VALIDATION, text)) == (readable or text == "")


def test_capture_buffer_and_script_reach_the_engine():
    options = extcap.engine_args(_paths("--capture-buffer", "64M"))
    assert options.capture_buffer == 64 << 20
    assert extcap.engine_args(_paths("--capture-buffer", " ")).capture_buffer is None
    assert extcap.engine_args(_paths()).capture_buffer is None
    ruleset = extcap._ruleset(_args("--script", str(EXAMPLES / "mask_features.py")), None)
    assert ruleset is not None and [a.name for a in ruleset.addons] == ["mask_features.py"]
    assert extcap._ruleset(_args("--script", ""), None) is None  # (an empty dialog field)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("--rings", "off", "--trace-notify"), "set Ring sampler to on"),
        (("--capture-buffer", "lots"), "Capture buffer: not a size: 'lots'"),
        (("--script", "/nonexistent/addon.py"), "--script /nonexistent/addon.py"),
        (("--extcap-capture-filter", "name =="), "capture filter: expected a value"),
        # what the dialog passes is escaped before Wireshark shows it
        (("--script", "/nonexistent/\x1b[2Ja.py"), "--script /nonexistent/\\x1b[2Ja.py"),
    ],
)
def test_what_cannot_run_is_refused_before_anything_starts(tmp_path, argv, said) -> None:
    """Before: --rings off dropped --trace-notify without a word (the capture ran)."""
    listen = tmp_path / "px.sock"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vuinspect.wireshark.extcap",
            "--capture",
            "--extcap-interface",
            extcap.INTERFACE,
            "--fifo",
            str(tmp_path / "ws.fifo"),
            "--listen",
            str(listen),
            "--connect",
            str(tmp_path / "be.sock"),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert r.returncode == 2 and said in r.stderr, r.stderr
    assert not listen.exists()


def test_the_capture_buffer_and_filter_are_parsed_once_between_the_check_and_the_engine(
    tmp_path, monkeypatch
) -> None:
    """One pass checks the dialog's options and makes the engine's (before: the check
    parsed --capture-buffer, then engine_args parsed it again; the capture filter was
    compiled to check it, then again by the recorder).  A real run that ends
    at the listen path (its directory is missing) counts the parses; the value is
    padded to 1 MB, so each parse is linear work that is not worth doing twice."""
    import vuinspect.filter

    calls: list[str] = []
    compiled: list[str] = []
    real, real_compile = extcap.parse_size, vuinspect.filter.compile_filter

    def counted(text: str) -> int:
        calls.append(text)
        return real(text)

    def counted_compile(text: str):
        compiled.append(text)
        return real_compile(text)

    monkeypatch.setattr(extcap, "parse_size", counted)
    monkeypatch.setattr(vuinspect.filter, "compile_filter", counted_compile)
    switch = sys.getswitchinterval()  # (the engine sets its own for the forwarding threads)
    padded = " " * 1_000_000 + "64M"
    try:
        code = extcap.capture(
            _args(
                "--listen",
                str(tmp_path / "missing" / "px.sock"),
                "--connect",
                str(tmp_path / "be.sock"),
                "--capture-buffer",
                padded,
                "--rings",
                "off",
                "--extcap-capture-filter",
                "name == GET_FEATURES",
            )
        )
    finally:
        sys.setswitchinterval(switch)
    assert code == 1  # refused at the listen path: the options had passed their check
    assert len(calls) == 1
    assert compiled == ["name == GET_FEATURES"]  # (the capture filter too: checked = compiled)
