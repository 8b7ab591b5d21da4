"""The data-plane problem codes are data that merges cleanly into protocol/problems.py."""

from __future__ import annotations

import typing

import pytest

from vuinspect.dataplane import DATAPLANE_CODES, DataProblem
from vuinspect.dataplane.problems import dp_problem
from vuinspect.protocol import problems as P


def test_codes_fit_the_protocol_table():
    severities = set(typing.get_args(P.Severity))
    groups = set(typing.get_args(P.Group))
    for code, info in DATAPLANE_CODES.items():
        assert isinstance(info, P.ProblemCode) and info.code == code
        assert info.severity in severities and info.group in groups, code
        assert info.summary and code == code.lower()
    clash = set(DATAPLANE_CODES) & {c for c in P.CODES if P.CODES[c] != DATAPLANE_CODES.get(c)}
    assert not clash, f"data-plane codes that mean something else already: {clash}"


def test_problem_records():
    p = dp_problem("desc_loop", "head 3: descriptor 1 again")
    assert p == DataProblem("desc_loop", "head 3: descriptor 1 again")
    assert p.to_json() == {
        "code": "desc_loop",
        "severity": "error",
        "text": "head 3: descriptor 1 again",
    }
    assert dp_problem("lost_call").text == DATAPLANE_CODES["lost_call"].summary
    with pytest.raises(KeyError):
        dp_problem("no_such_code")
