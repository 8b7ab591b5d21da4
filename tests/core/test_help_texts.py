"""Every ``--help`` is for users: no internal issue numbers, no reStructuredText markup,
no internal function or module names (the descriptions are not the modules' docstrings)."""

from __future__ import annotations

import argparse
import re

import pytest

from vuinspect.cli import build_parser


def _helps() -> dict[str, str]:
    parser = build_parser()
    helps = {"vuinspect": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps.update({name: p.format_help() for name, p in action.choices.items()})
    return helps


HELPS = _helps()


def test_every_command_is_checked() -> None:
    assert {"proxy", "view", "install-dissector", "gen-lua", "extcap"} <= set(HELPS)


@pytest.mark.parametrize("command", sorted(HELPS))
def test_help_has_no_internal_words(command: str) -> None:
    text = HELPS[command]
    assert "``" not in text, text
    assert not re.search(r"\bissue \d+|#\d+\b", text), text
    assert not re.search(r"\w\(\)", text), text  # a function name such as generate()
    assert not re.search(r"\b[\w/]+\.py\b", text), text  # a module path
