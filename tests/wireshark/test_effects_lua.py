"""The dissector runs the rule table of protocol/effects.py, not a copy of it.

The dissector is generated with one entry of the table taken away and dissects a
short capture: what it reports must change with the table, as the Python
session's does (tests/protocol/test_effects.py); an op the Lua runtime does not
know stops it at load instead of being skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import ws_pdml as W

from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol import effects as EF
from vuinspect.protocol.requests import FrontendRequest as FE
from vuinspect.wireshark import luagen

pytestmark = pytest.mark.tshark


def _frames() -> list[Frame]:
    ns = iter(range(1_000_000, 2_000_000, 1000))
    out = [event_frame("open", next(ns), 1, {"label": "effects"})]

    def main(direction: str, data: bytes, fds: tuple[str, ...] = ()) -> None:
        out.append(Frame(next(ns), 1, "main", direction, data, fds))

    main("f2b", build("main", FE.GET_FEATURES))
    main("b2f", build("main", FE.GET_FEATURES, {"features": 1 << 32}, reply=True))
    main("f2b", build("main", FE.SET_VRING_KICK, {"value": 0}), ("eventfd:kick",))
    for _ in range(2):  # the second finds the ring stopped
        main("f2b", build("main", FE.GET_VRING_BASE, {"index": 0, "num": 0}))
        main("b2f", build("main", FE.GET_VRING_BASE, {"index": 0, "num": 3}, reply=True))
    return out


@pytest.fixture(scope="module")
def capture(capdir) -> Path:
    return W.write_capture(capdir / "effects.pcapng", _frames())


def _without(monkeypatch, rid: int, **change) -> None:
    rule = EF.RULES["main"][rid]
    monkeypatch.setitem(EF.RULES["main"], rid, dataclasses.replace(rule, **change))


def _not_started(lua: Path, capture: Path) -> list[int]:
    out = W.dissect(capture, lua=lua)
    assert not out.lua_errors, out.lua_errors
    return [frame for frame, code in out.experts if code == "vring_not_started"]


def _python_not_started(capture: Path) -> list[int]:
    msgs = Pipeline().run(W.read_frames(capture))
    return [m.frame for m in msgs if "vring_not_started" in m.problem_codes]


def _generate(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(luagen.generate(), encoding="utf-8")
    return path


def test_the_dissector_follows_the_table(monkeypatch, tmp_path, capture):
    whole = _not_started(W.LUA, capture)
    assert whole == _python_not_started(capture)
    assert len(whole) == 1  # only the second GET_VRING_BASE

    kick = EF.RULES["main"][FE.SET_VRING_KICK]
    _without(monkeypatch, FE.SET_VRING_KICK, request=kick.request[:-1])  # no "started"
    assert kick.request[-1] == EF.Effect("vring_const", "started", value=True)
    lua = _generate(tmp_path, "no_start.lua")
    assert len(_not_started(lua, capture)) == 2
    assert _not_started(lua, capture) == _python_not_started(capture)

    monkeypatch.undo()
    stop = EF.RULES["main"][FE.GET_VRING_BASE]
    _without(
        monkeypatch,
        FE.GET_VRING_BASE,
        checks=tuple(c for c in stop.checks if c.kind != "vring_started"),
    )
    lua = _generate(tmp_path, "no_check.lua")
    assert _not_started(lua, capture) == [] == _python_not_started(capture)


def test_an_op_the_runtime_does_not_know_stops_the_load(monkeypatch, tmp_path, capture):
    monkeypatch.setattr(EF, "OPS", (*EF.OPS, "teleport"))
    lua = _generate(tmp_path, "teleport.lua")
    proc = W.tshark("-r", str(capture), "-X", f"lua_script:{lua}")
    assert "does not know the effect op teleport" in proc.stderr + proc.stdout
