"""errors.CliError: one line and an exit status, no traceback (cli.main reports it)."""

from __future__ import annotations

from vuinspect.cli import main
from vuinspect.errors import CliError


def test_the_error_keeps_its_text_and_exit_status():
    assert CliError("no such file").code == 1
    err = CliError("bad filter: x", 2)
    assert (str(err), err.code) == ("bad filter: x", 2)


def test_a_command_that_raises_it_ends_with_one_line_and_its_status(capsys, tmp_path):
    missing = tmp_path / "nope.pcapng"
    assert main(["view", "-r", str(missing), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "vuinspect view: give the capture once: FILE or -r FILE\n"
