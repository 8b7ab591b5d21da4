"""What a new user sees when a command cannot do what was asked: the subcommand's own
usage, a hint for the likely slip, escaped paths, and a note instead of silence."""

from __future__ import annotations

import dpkt
import pytest

from vuinspect.capture import CaptureWriter
from vuinspect.cli import main
from vuinspect.frames import ring_frame
from vuinspect.hints import NO_RINGS
from vuinspect.samples import device_start


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [["--rings", "--detail"], ["--rings"], ["--stats"]])
def test_no_ring_frames_says_how_to_record_them(capsys, device_start_capture, args):
    code, out, err = cli(capsys, "read", *args, str(device_start_capture))
    assert code == 0
    assert err == f"vuinspect read: {NO_RINGS}\n"
    assert ("Vrings" not in out) and (out == "" if "--rings" in args else "Connections" in out)


def test_ring_frames_present_no_note(capsys, tmp_path):
    path = tmp_path / "rings.pcapng"
    frames = device_start()
    sample = {"vring": 0, "ts_ns": frames[-1].ts_ns + 1, "layout": "split", "num": 256}
    sample |= {"ok": True, "avail_idx": 2, "used_idx": 2, "in_flight": 0, "problems": []}
    with CaptureWriter(str(path)) as w:
        for f in [*frames, ring_frame(sample["ts_ns"], 1, sample)]:
            w.write(f)
    for args in (["--rings"], ["--stats"]):
        code, out, err = cli(capsys, "read", *args, str(path))
        assert (code, err) == (0, ""), err
        assert out


def test_the_tui_says_the_same_sentence():
    from vuinspect.tui.queues import EMPTY_TEXT

    assert EMPTY_TEXT.startswith(NO_RINGS)


@pytest.mark.parametrize(
    "args,usage,bad",
    [
        (["read", "-Z", "problems", "x.pcapng"], "usage: vuinspect read ", "-Z"),
        (["view", "--fllow", "x"], "usage: vuinspect view ", "--fllow"),
        (["view", "a.pcapng", "b.pcapng"], "usage: vuinspect view ", "b.pcapng"),
    ],
)
def test_unknown_option_shows_the_subcommands_usage(capsys, args, usage, bad):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(usage), err
    assert f"vuinspect {args[0]}: error: unrecognized arguments: {bad}" in err
    assert "COMMAND ..." not in err


def test_dash_capital_y_is_the_display_filter_as_in_tshark(capsys, device_start_capture):
    f = cli(capsys, "read", "-f", "name == GET_FEATURES", str(device_start_capture))
    y = cli(capsys, "read", "-Y", "name == GET_FEATURES", str(device_start_capture))
    assert f == y and f[0] == 0 and "GET_FEATURES" in f[1]


def test_single_equals_suggests_double(capsys, device_start_capture):
    code, out, err = cli(capsys, "read", "-f", "name = GET_FEATURES", str(device_start_capture))
    assert (code, out) == (2, "")
    assert "unexpected character '='" in err and "did you mean ==?" in err, err


@pytest.mark.parametrize(
    "field,hint", [("nmae", "did you mean name?"), ("payload.nmu", "did you mean payload.num?")]
)
def test_unknown_dash_e_field_has_did_you_mean(capsys, device_start_capture, field, hint):
    code, out, err = cli(capsys, "read", "-T", "fields", "-e", field, str(device_start_capture))
    assert (code, out) == (2, "")
    assert f"unknown field {field!r} for -e" in err and hint in err, err


def test_paths_in_errors_are_escaped(capsys, tmp_path):
    evil = str(tmp_path / "evil\x1b[31mnope.pcapng")
    code, out, err = cli(capsys, "read", evil)
    assert code == 1 and "\x1b" not in err and "\\x1b[31mnope.pcapng: no such file" in err


def test_argparse_errors_are_escaped(capsys):
    code, out, err = cli(capsys, "read", "--\x1b[2Jx")
    assert code == 2 and "\x1b" not in err and "\\x1b[2Jx" in err


def test_damage_lines_are_escaped(capsys, device_start_capture, tmp_path):
    data = device_start_capture.read_bytes()
    cut = tmp_path / "cut\x1b[1m.pcapng"
    cut.write_bytes(data[: len(data) - 10])
    code, out, err = cli(capsys, "read", str(cut))
    assert code == 2 and "capture damaged" in err and "\x1b" not in err, err


def test_ethernet_pcapng_refusal_says_not_ours_once(capsys, tmp_path):
    path = tmp_path / "eth.pcapng"
    with path.open("wb") as fh:
        w = dpkt.pcapng.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        w.writepkt(b"\x00" * 60, ts=1.0)
    code, out, err = cli(capsys, "read", str(path))
    assert code == 1 and err.count("not a vuinspect capture") == 1, err
    assert err == (
        f"vuinspect read: {path}: not a vuinspect capture: "
        "pcapng interface 0 has link type 1, not 252 (exported PDU)\n"
    )
