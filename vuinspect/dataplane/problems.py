"""Data-plane problem codes, as data, in the shape of ``protocol.problems``.

The table lives in ``vuinspect/protocol/problems.py`` (one source of truth:
``CODES`` holds these too, so the filter, NDJSON and the Lua generator know
them); ``DATAPLANE_CODES`` here is that subset.  A ``DataProblem`` is a finding on a vring or
an address: data attached to a result, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.problems import DATAPLANE_CODES as _DATAPLANE_CODES
from ..protocol.problems import ProblemCode

DATAPLANE_CODES: dict[str, ProblemCode] = _DATAPLANE_CODES


@dataclass(frozen=True, slots=True)
class DataProblem:
    """One data-plane finding: a stable ``code`` plus human ``text``."""

    code: str
    text: str

    @property
    def info(self) -> ProblemCode:
        return DATAPLANE_CODES[self.code]

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.info.severity, "text": self.text}


def problem_from_json(d: Any) -> DataProblem:
    """A DataProblem read back (from a capture); ValueError if it is not one we know."""
    if (
        not isinstance(d, dict)
        or d.get("code") not in DATAPLANE_CODES
        or not isinstance(d.get("text"), str)
    ):
        raise ValueError(f"not a data-plane problem: {d!r:.80}")
    return DataProblem(d["code"], d["text"])


def dp_problem(code: str, text: str | None = None) -> DataProblem:
    """Make a DataProblem; ``text`` defaults to the code's summary."""
    if code not in DATAPLANE_CODES:
        raise KeyError(f"unknown data-plane problem code {code!r}")
    return DataProblem(code, text or DATAPLANE_CODES[code].summary)
