"""tshark habits and honest errors: -r, several files, -t, -c, -T fields -e, exit 2, help, fields."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vuinspect.cli import main
from vuinspect.fields import markdown_table
from vuinspect.hints import NO_RINGS
from vuinspect.samples import device_start

ROOT = Path(__file__).resolve().parents[2]
N = len(device_start())


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "expr,hint",
    [
        ("name == SET_MEM_TABL", "did you mean SET_MEM_TABLE"),
        ("payload.foo > 1", "unknown field 'payload.foo'"),
        ('conn > "abc"', "conn is a number"),
    ],
)
def test_filters_that_cannot_match_exit_2_with_one_line(capsys, device_start_capture, expr, hint):
    code, out, err = cli(capsys, "read", "-f", expr, str(device_start_capture))
    assert (code, out) == (2, "")
    assert hint in err and len(err.strip().splitlines()) == 1, err


def test_dash_r_reads_a_file_and_several_files_read_in_sequence(capsys, device_start_capture):
    code, out, _ = cli(capsys, "read", "-r", str(device_start_capture))
    assert code == 0 and len(out.splitlines()) == N
    code, both, _ = cli(capsys, "read", "-r", str(device_start_capture), str(device_start_capture))
    assert code == 0 and len(both.splitlines()) == 2 * N
    code, _, err = cli(capsys, "read")
    assert code == 2 and "no capture file" in err


def test_several_files_keep_their_connections_apart(
    capsys, device_start_capture, every_message_capture
):
    """Two runs that both used conn 1 (as mergecap or cat of them would) stay two
    connections: each file is its own origin."""
    again = device_start_capture.with_name("again.pcapng")
    again.write_bytes(device_start_capture.read_bytes())
    files = (str(device_start_capture), str(again))
    code, out, _ = cli(capsys, "read", "-T", "fields", "-e", "conn", "-e", "name", *files)
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [conn for conn, name in rows if name == "OPEN"] == ["1", "2"]
    assert len(rows) == 2 * N
    code, out, _ = cli(capsys, "read", "--stats", "--json", *files)
    assert [c["conn"] for c in json.loads(out)["connections"]] == [1, 2]
    cut = every_message_capture.with_name("cut.pcapng")
    cut.write_bytes(every_message_capture.read_bytes()[:-30])
    code, out, err = cli(capsys, "read", str(device_start_capture), str(cut))
    assert code == 2 and f"{cut}: capture damaged at byte" in err, err
    text = every_message_capture.with_name("notes.txt")
    text.write_text("hello\n")
    code, out, err = cli(capsys, "read", str(device_start_capture), str(text))
    assert code == 1 and out == "" and f"{text}: not a vuinspect capture" in err


def test_time_formats(capsys, device_start_capture):
    def times(fmt: str) -> list[str]:
        code, out, _ = cli(capsys, "read", "-t", fmt, str(device_start_capture))
        assert code == 0
        return [
            line.split()[1] if fmt != "ad" else " ".join(line.split()[1:3])
            for line in out.splitlines()
        ]

    epoch = times("e")
    assert re.fullmatch(r"\d{10}\.\d{9}", epoch[0])
    rel = times("r")
    assert rel[0] == "0.000000" and float(rel[-1]) > 0
    delta = times("d")
    assert delta[0] == "0.000000" and all(float(d) >= 0 for d in delta)
    assert abs(sum(map(float, delta)) - float(rel[-1])) < 1e-4
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{9}", times("a")[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}", times("ad")[0])
    code, out, _ = cli(capsys, "read", "--relative", str(device_start_capture))
    assert out.splitlines()[0].split()[1] == "0.000000"


def test_count_stops_after_n_matching(capsys, device_start_capture):
    code, out, _ = cli(capsys, "read", "-c", "3", "-f", "reply", str(device_start_capture))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all(" reply" in x for x in lines)
    with pytest.raises(SystemExit) as info:  # argparse's usage error
        main(["read", "-c", "0", str(device_start_capture)])
    assert info.value.code == 2 and "positive" in capsys.readouterr().err


def test_fields_output_tab_separated(capsys, device_start_capture):
    code, out, _ = cli(
        capsys,
        "read",
        "-T",
        "fields",
        "-e",
        "frame",
        "-e",
        "name",
        "-e",
        "dir",
        "-e",
        "reply",
        "-e",
        "payload.num",
        "-e",
        "latency_us",
        "-f",
        "name == GET_VRING_BASE",
        str(device_start_capture),
    )
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and rows and all(len(r) == 6 for r in rows)
    req, rep = rows[0], rows[1]
    assert req[1:4] == ["GET_VRING_BASE", "f2b", "False"] and req[5] == ""
    assert rep[1:5] == ["GET_VRING_BASE", "b2f", "True", "37"] and float(rep[5]) > 0
    code, _, err = cli(capsys, "read", "-T", "fields", "-e", "nosuch", str(device_start_capture))
    assert code == 2 and "nosuch" in err
    code, out, _ = cli(capsys, "read", "-T", "json", "-c", "1", str(device_start_capture))
    assert json.loads(out)["direction"] == "f2b"


def test_stats_follow_the_filter_and_say_so(capsys, device_start_capture):
    code, out, _ = cli(
        capsys, "read", "--stats", "-f", "name == SET_VRING_ENABLE", str(device_start_capture)
    )
    assert code == 0 and out.startswith("Statistics of the messages matching: name == SET_VRING")
    assert "SET_VRING_ENABLE" in out and "GET_FEATURES" not in out
    code, out, _ = cli(
        capsys, "read", "--stats", "--json", "-f", "not reply", str(device_start_capture)
    )
    stats = json.loads(out)
    assert stats["filter"] == "not reply"
    assert all(r["replies"] == 0 for r in stats["requests"]) and stats["requests"]
    code, out, _ = cli(capsys, "read", "--stats", "--json", str(device_start_capture))
    assert json.loads(out)["filter"] is None
    assert any(r["replies"] for r in json.loads(out)["requests"])


def test_help_is_written_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "dispatcher" not in out and "sub-command modules" not in out
    assert "\n  vuinspect read trace.pcapng -f 'problems'\n" in out
    for cmd in ("read", "view"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        examples = [line for line in out.splitlines() if line.startswith("  vuinspect ")]
        assert len(examples) >= 3, out  # one example per line
        assert "-r FILE" in out and "-f EXPR" in out


def test_view_flags_match_read(capsys, device_start_capture):
    with pytest.raises(SystemExit) as info:
        main(["view", "--device", "bogus", str(device_start_capture)])
    assert info.value.code == 2
    code, _, err = cli(capsys, "view", "-f", "nme == 1", str(device_start_capture))
    assert code == 2 and "did you mean name" in err
    code, _, err = cli(capsys, "view")
    assert code == 2 and "no capture file" in err
    from vuinspect.cli import build_parser

    for argv in (["view", "-r", "x.pcapng", "-f", "reply"], ["view", "x.pcapng", "-f", "reply"]):
        args = build_parser().parse_args(argv)
        args._check(args)  # what main() runs before the TUI
        assert (args.file, args.filter) == ("x.pcapng", "reply")


def test_fields_command_lists_every_name_and_the_readme_table_is_generated(capsys):
    code, out, _ = cli(capsys, "fields")
    names = {line.split("\t")[0] for line in out.splitlines()}
    assert (
        code == 0
        and {
            "direction",
            "reply",
            "problems",
            "severity",
            "latency_us",
            "payload.num",
            "payload.regions.memory_size",
        }
        <= names
    )
    assert "aliases: dir" in out
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README field table: paste `vuinspect fields --markdown`"


def test_progress_bar_on_a_terminal_only(tmp_path):
    """stderr a pty and stdout idle (--stats) or a file: the bar is drawn; stdout the same
    terminal (lines stream), or stderr piped: no bar."""
    import os
    import pty

    from vuinspect.capture import CaptureWriter

    big = tmp_path / "big.pcapng"
    frames = device_start()
    with CaptureWriter(str(big)) as w:
        for _ in range(25):
            for f in frames:
                w.write(f)
    env = {**os.environ, "VUINSPECT_PROGRESS_MIN": "1"}
    cmd = [sys.executable, "-m", "vuinspect", "read", str(big)]

    def on_pty(args: list[str], stdout_to: str) -> bytes:
        master, slave = pty.openpty()
        out = (
            open(tmp_path / "out.txt", "wb")  # noqa: SIM115
            if stdout_to == "file"
            else (slave if stdout_to == "pty" else subprocess.DEVNULL)
        )
        try:
            proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=slave, env=env)
            os.close(slave)
            seen = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            assert proc.wait(timeout=60) == 0
        finally:
            os.close(master)
            if stdout_to == "file":
                out.close()
        return seen

    for args, stdout_to in ((["--stats"], "devnull"), ([], "file")):
        seen = on_pty(args, stdout_to)
        assert b"%" in seen and b"big.pcapng [" in seen, (args, stdout_to, seen[-200:])
    assert len((tmp_path / "out.txt").read_bytes().splitlines()) == 25 * N
    seen = on_pty([], "pty")
    assert b"big.pcapng [" not in seen and seen.count(b"\n") >= 25 * N
    piped = subprocess.run([*cmd, "--stats"], capture_output=True, env=env, timeout=60)
    assert piped.returncode == 0 and piped.stderr == f"vuinspect read: {NO_RINGS}\n".encode()


def test_readme_filter_examples_compile_and_read_examples_run(capsys):
    """Every line of the README's filter block is a valid filter; the `vuinspect read`
    examples of 'Reading captures' run as written on the shipped captures."""
    import shlex

    from vuinspect.filter import compile_filter

    text = (ROOT / "README.md").read_text()
    block = text.split("### Filter language", 1)[1].split("```", 2)[1]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert len(lines) >= 8
    for line in lines:
        compile_filter(line)
    reading = text.split("### Reading captures", 1)[1].split("```", 2)[1]
    ran = 0
    for ln in reading.splitlines():
        words = shlex.split(ln, comments=True)
        if words[:2] != ["vuinspect", "read"] or "|" in ln:
            continue
        words = [str(ROOT / w) if w.endswith(".pcapng") else w for w in words]
        code, out, err = cli(capsys, *words[1:])
        assert code == 0 and out and err in ("", f"vuinspect read: {NO_RINGS}\n"), (ln, err)
        ran += 1
    assert ran >= 5
