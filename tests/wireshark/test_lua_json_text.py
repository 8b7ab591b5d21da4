"""The Lua's JSON reader turns \\u escapes into the text Python's json.loads + safe_text show.

A lone surrogate (``"\\ud800"``) was written as CESU-8 (invalid UTF-8 in the tree); a
surrogate pair is one code point; ``tonumber`` took ``\\u-001`` and `` 1  `` as hex.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import ws_pdml as W
from test_lua_runtime import PRELUDE

from vuinspect.render import safe_text
from vuinspect.wireshark.luagen import lua_str

CASES = [
    r'"\ud800"',
    r'"N\udc9b31m"',
    r'"a\ud83d\ude00b"',
    r'"\ud800\u0041"',
    r'"\ude00\ud83d"',
    r'"\ud83d\ud83d\ude00"',
    r'"\uDBFF\uDFFF"',
    r'"x\u061cy"',
    r'"\u-001"',
    r'"\u 12 "',
    r'"\u12"',
]


def _python(case: str) -> str:
    try:
        return safe_text(json.loads(case))
    except ValueError:
        return "<nil>"


@pytest.mark.parametrize("lua", ["lua5.2", "lua5.4"])
def test_json_escapes_read_as_python_shows_them(lua, tmp_path):
    if shutil.which(lua) is None:
        pytest.skip(f"{lua} is not installed")
    script = tmp_path / "run.lua"
    script.write_text(
        "WITH_BIT = false\n"
        + PRELUDE
        + W.LUA.read_text()
        + "\nlocal CASES = {\n"
        + ",\n".join(lua_str(c) for c in CASES)
        + "\n}\nfor i = 1, #CASES do local v = json_decode(CASES[i])\n"
        + '  io.write(v == nil and "<nil>" or esc(v), "\\0") end\n'
    )
    proc = subprocess.run([lua, str(script)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.decode("utf-8").split("\0")[:-1]  # strict: no CESU-8 surrogate
    assert got == [_python(c) for c in CASES]
