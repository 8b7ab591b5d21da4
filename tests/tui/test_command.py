"""``vuinspect view``: argument errors are one line, no traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.errors import CliError
from vuinspect.tui import command


def vuinspect(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command with no terminal (stdin /dev/null, output captured), bounded in time."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "vuinspect", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"vuinspect {' '.join(argv)}: still running after {timeout} s"
        ) from None


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return vuinspect("view", *args, timeout=timeout)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    out = run_cli(str(tmp_path / "nope.pcapng"))
    assert out.returncode == 1
    assert out.stderr == f"vuinspect view: {tmp_path / 'nope.pcapng'}: no such file\n"


@pytest.mark.parametrize("name", ["missing", "empty", "directory", "text"])
def test_file_errors_are_worded_as_read_words_them(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.pcapng"
    if name == "empty":
        path.write_bytes(b"")
    elif name == "directory":
        path.mkdir()
    elif name == "text":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    view = run_cli(str(path))
    read = vuinspect("read", str(path))
    assert read.returncode == view.returncode == 1
    said = read.stderr.removeprefix("vuinspect read: ")
    assert said.startswith(f"{path}: ") and len(said.splitlines()) == 1, read.stderr
    assert view.stderr == f"vuinspect view: {said}"


def test_without_a_terminal_it_refuses_in_one_line(demo_path: Path) -> None:
    """Started anyway, the TUI wrote escape codes into the output and never ended."""
    out = run_cli(str(demo_path), timeout=20)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        "vuinspect view: the TUI needs a terminal (stdin and stdout); "
        f"to print the capture: vuinspect read {demo_path}\n"
    )


def test_not_a_capture(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello, this is not pcapng\n" * 10)
    out = run_cli(str(junk))
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_bad_filter_is_refused_before_the_ui(demo_path: Path) -> None:
    p = argparse.ArgumentParser()
    command.configure(p)
    args = p.parse_args([str(demo_path), "--filter", "conn =="])
    with pytest.raises(CliError, match="bad --filter"):
        command.run(args)


def test_dash_y_is_the_filter_as_in_tshark(demo_path: Path) -> None:
    p = argparse.ArgumentParser()
    command.configure(p)
    assert p.parse_args([str(demo_path), "-Y", "problems"]).filter == "problems"


def test_help_lists_the_options() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for opt in ("--filter", "--device", "--follow"):
        assert opt in out.stdout


async def test_follow_waits_for_a_capture_that_does_not_exist_yet(tmp_path: Path) -> None:
    """Started before the proxy writes it: 'waiting for PATH', then its frames as they come."""
    from vuinspect.capture import CaptureWriter
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.samples import demo_frames

    from .conftest import screen_text, until

    path = tmp_path / "notyet.pcapng"
    frames = demo_frames()
    command._refuse_foreign(str(path), True)  # no error: it is waited for
    source = command.open_source(str(path), True)
    app = VuInspectApp(source, poll_interval=0.1)
    writer = None
    try:
        async with app.run_test(size=(200, 30)) as pilot:
            await until(pilot, lambda: f"waiting for {path}" in screen_text(app), "the title")
            writer = CaptureWriter(path)
            for f in frames[:30]:
                writer.write(f)
            writer.flush()
            await until(pilot, lambda: app.model.decoded == 30, "the first frames")
            for f in frames[30:]:
                writer.write(f)
            writer.flush()
            await until(pilot, lambda: app.model.decoded == len(frames), "appended frames")
            assert "waiting for" not in screen_text(app)
    finally:
        if writer is not None:
            writer.close()
        source.close()


async def test_quit_works_while_the_followed_capture_is_awaited(tmp_path: Path) -> None:
    from vuinspect.tui.app import VuInspectApp

    from .conftest import screen_text, until

    source = command.open_source(str(tmp_path / "never.pcapng"), True)
    app = VuInspectApp(source, poll_interval=0.1)
    try:
        async with app.run_test(size=(200, 30)) as pilot:
            await until(pilot, lambda: "waiting for" in screen_text(app), "the title")
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None, "the app to quit", 5)
        assert app.return_code == 0
    finally:
        source.close()


def test_a_followed_file_that_comes_and_fails_is_named_not_waited_for(tmp_path: Path) -> None:
    """It appeared but is no capture: the title names it (not 'waiting for'), wait() ends."""
    import time

    from vuinspect.tui.awaited import AwaitedFile

    path = tmp_path / "later.pcapng"
    src = AwaitedFile(path)
    try:
        path.write_text("not a capture\n" * 10)
        t0 = time.monotonic()
        src.wait(0, 5.0)
        assert time.monotonic() - t0 < 1.0 and src.load_error is not None
        assert str(path) in src.name and "waiting" not in src.name
    finally:
        src.close()
