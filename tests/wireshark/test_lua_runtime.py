"""The dissector loads and its pure helpers compute the same on Lua 5.2 and Lua 5.4.

Wireshark 4.0 here embeds Lua 5.2; 4.4+ embeds 5.4, which has integer/float
subtypes and no ``bit`` library by default.  The stand-alone interpreters run
the generated file with a stub of the Wireshark API (enough to load it), then
call its helpers: arithmetic that works on 5.2 but not 5.4 (``%d`` of a float,
``bit`` missing) fails here.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
import ws_pdml as W

from vuinspect.render import safe_text
from vuinspect.wireshark.luagen import lua_str

PRELUDE = r"""
local function stub() return setmetatable({}, { __index = function() return 0 end }) end
base, expert, frametype = stub(), { group = stub(), severity = stub() }, stub()
ENC_UTF_8 = 0
local function ctor() return function(...) return { ... } end end
ProtoField = setmetatable({}, { __index = function() return ctor() end })
ProtoExpert = { new = ctor() }
function Proto(name) return { name = name } end
if WITH_BIT and bit32 then bit = { band = bit32.band } end
"""

EPILOGUE = r"""
local function check(cond, what) if not cond then error("FAILED: " .. what, 2) end end
local j = json_decode('{"label":"/run/x.sock","n":12,"a":[1,{"b":null}],"u":"caf\\u00e9 \\ud83d\\ude00","t":true}')
check(j and j.label == "/run/x.sock" and j.n == 12 and j.t == true, "json object")
check(j.u == "caf\195\169 \240\159\152\128", "json unicode")
check(json_decode("not json") == nil and json_decode('{"a":1} x') == nil, "json rejects")
check(human_size(256 * 1024 * 1024) == "256MiB" and human_size(1536) == "1.5KiB", "human_size")
check(band(0xFFFFFFFF, 0x80000000) == 0x80000000 and band(0x1F, 0x3) == 3, "band")
check(bit_set(2 ^ 40, 40) and not bit_set(2 ^ 40, 8) and bit_set(5, 2), "bit_set")
check(hex(0x1234) == "1234" and hex(2 ^ 40) == "10000000000", "hex")
check(dec(7) == "7" and dec(true) == "True", "dec")
check(dec(1023) == "1023" and dec(1024) == "1024" and dec(2 ^ 40) == "1099511627776", "dec table edge")
check(num_eq(0x404, 0x404) and not num_eq(0x405, 0x404), "num_eq")
check(guess_device(1) == "net" and guess_device(2 ^ 13) == "blk" and guess_device(2 ^ 30) == nil, "guess")
check(payload_summary(LAYOUTS.mem_table, { regions = { { memory_size = 2 ^ 30 }, { memory_size = 2 ^ 30 } } })
      == "2 regions 2GiB", "summary")
check(payload_summary(LAYOUTS.vring_fd, { index = 3, nofd = true }) == "vring 3 NOFD", "summary vring")
check(payload_summary(LAYOUTS.vring_state, { index = 1, num = 0 }) == "vring 1"
      and payload_summary(LAYOUTS.vring_num, { index = 1, num = 256 }) == "vring 1 num=256", "summary vring num")
check(payload_summary(LAYOUTS.ack, { result = 0 }) == "ok"
      and payload_summary(LAYOUTS.ack, { result = 3 }) == "FAILED result=3", "summary ack")
check(payload_summary(LAYOUTS.virtio_features, { other = 1 }) == ""
      and payload_summary(LAYOUTS.virtio_features, {}) == "", "summary features without features")
check(payload_summary(LAYOUTS.vring_base, { index = 2 }) == "index=2", "a form that does not apply: generic")
check(payload_summary(LAYOUTS.vring_area, { value = 0x1AC, index = 172, nofd = true, size = 16, offset = 9 })
      == "value=0x1ac index=172 nofd=True size=0x10", "generic summary")
check(stats_text({ ["main:GET_FEATURES"] = { count = 2, replies = 1, lat = { 12.5 }, problems = 0 } })
      :find("main:GET_FEATURES", 1, true) ~= nil, "stats")
print("OK " .. _VERSION)
"""


@pytest.mark.parametrize("lua", ["lua5.2", "lua5.4"])
@pytest.mark.parametrize("with_bit", [True, False], ids=["bit", "no-bit"])
def test_loads_and_helpers_agree(lua, with_bit, tmp_path):
    if shutil.which(lua) is None:
        pytest.skip(f"{lua} is not installed")
    script = tmp_path / "run.lua"
    script.write_text(
        f"WITH_BIT = {'true' if with_bit else 'false'}\n" + PRELUDE + W.LUA.read_text() + EPILOGUE
    )
    proc = subprocess.run(
        [lua, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK Lua 5."), proc.stdout


def _texts() -> list[str]:
    """Random texts of the unsafe characters, their UTF-8 neighbours and plain ones."""
    from vuinspect.render import _UNSAFE_CHARS, SURROGATES

    unsafe = [c for c in _UNSAFE_CHARS if c not in SURROGATES]  # no UTF-8 (test_lua_json_text)
    near = [0xA0, 0xFF, 0x061B, 0x061D, 0x2000, 0x2026, 0x2027, 0x202F, 0x2030, 0x2065, 0x206A]
    near += [0x1F600, 0xE9]
    pool = [chr(c) for c in [*unsafe, *near]] + list('ab %-[]^\\"')
    rng = random.Random(7)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randrange(12))) for _ in range(3000)]
    return texts + [chr(c) for c in unsafe] + ["plain", "", "a…b"]


def _each(lua: str, tmp_path, texts: list[str], call: str) -> list[str]:
    """``call`` (Lua, of ``t``) on each text in the generated file's scope, as UTF-8 (strict)."""
    if shutil.which(lua) is None:
        pytest.skip(f"{lua} is not installed")
    script = tmp_path / "run.lua"
    script.write_text(
        "WITH_BIT = false\n"
        + PRELUDE
        + W.LUA.read_text()
        + "\nlocal TEXTS = {\n"
        + ",\n".join(lua_str(t) for t in texts)
        + f'\n}}\nfor i = 1, #TEXTS do local t = TEXTS[i]; io.write({call}, "\\0") end\n'
    )
    proc = subprocess.run([lua, str(script)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode("utf-8").split("\0")[:-1]


@pytest.mark.parametrize("lua", ["lua5.2", "lua5.4"])
def test_esc_escapes_as_safe_text(lua, tmp_path):
    """The Lua's esc() and render.safe_text give the same text (one table, generated)."""
    texts = _texts()
    assert _each(lua, tmp_path, texts, "esc(t)") == [safe_text(t) for t in texts]


#: JSON strings with \u escapes: lone surrogates (the Lua wrote them as CESU-8, invalid
#: UTF-8 in the tree), pairs (one code point), and what JSON refuses (tonumber took "-001").
JSON_CASES = [
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


def _python_shows(case: str) -> str:
    try:
        return safe_text(json.loads(case))
    except ValueError:
        return "<nil>"


@pytest.mark.parametrize("lua", ["lua5.2", "lua5.4"])
def test_json_escapes_read_as_python_shows_them(lua, tmp_path):
    """The Lua's json_decode + esc() give the text json.loads + safe_text give."""
    got = _each(lua, tmp_path, JSON_CASES, 'esc(json_decode(t) or "<nil>")')
    assert got == [_python_shows(c) for c in JSON_CASES]
