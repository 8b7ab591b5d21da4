"""Source hygiene of the package: every ``type: ignore`` says which error and why.

A bare ignore hides whatever mypy finds on that line later; naming the error
code bounds it, and the reason after it (``# type: ignore[arg-type]  # why``)
tells the next reader whether the ignore is still needed (issue #16).  Fix the
types where that is right; keep an ignore only with its reason.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import vuinspect

ROOT = Path(vuinspect.__file__).parent
#: ``type: ignore[code, ...]`` followed by ``# a reason`` in the same comment.
_EXPLAINED = re.compile(r"type:\s*ignore\[[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*\]\s+#\s*\S")


def unexplained(source: str) -> list[int]:
    """Line numbers of ``type: ignore`` comments without an error code and a reason."""
    bad = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT or "type: ignore" not in tok.string:
            continue
        rest = tok.string[tok.string.index("type: ignore") :]
        if not _EXPLAINED.match(rest):
            bad.append(tok.start[0])
    return bad


def test_checker_catches_what_it_should() -> None:
    assert unexplained("x = f(a)  # type: ignore[arg-type]  # a is checked above\n") == []
    assert unexplained("x = f(a)  # noqa: E501  # type: ignore[arg-type]  # checked\n") == []
    assert unexplained("x = f(a)  # type: ignore[arg-type]\n") == [1]
    assert unexplained("x = 1\ny = f(a)  # type: ignore\n") == [2]
    assert unexplained("x = f(a)  # type: ignore  # no code\n") == [1]
    assert unexplained("x = f(a)  # type: ignore[arg-type]  #\n") == [1]
    assert unexplained('s = "# type: ignore"  # a string, not a comment\n') == []


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    found = [
        f"{path.relative_to(ROOT.parent)}:{line}"
        for path in sorted(ROOT.rglob("*.py"))
        for line in unexplained(path.read_text(encoding="utf-8"))
    ]
    assert not found, "type: ignore without [code]  # reason:\n" + "\n".join(found)
