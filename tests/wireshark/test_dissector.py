"""The generated Lua dissector under real tshark agrees with the Python decoder.

Every check runs tshark once per capture and compares message by message with
``Pipeline`` + ``to_json``: request, name, flags, size, reply, layout, fds,
payload, reply pairing, latency and problem codes (as expert info).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import ws_pdml as W
import ws_samples as S

from vuinspect.capture import read_frames
from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.problems import CODES, DATAPLANE_CODES
from vuinspect.protocol.requests import BACKEND_REQUESTS, FRONTEND_REQUESTS
from vuinspect.wireshark import luagen, pyshark_capture

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(300)]
#: Codes of control messages; the data-plane ones come in ring frames (test below).
CONTROL_CODES = set(CODES) - set(DATAPLANE_CODES)
CAPTURES = sorted((W.REPO / "captures").glob("*.pcapng"))


def test_committed_dissector_is_current():
    assert W.LUA.read_text(encoding="utf-8") == luagen.generate(), (
        "dissectors/vhost_user.lua is stale: run `vuinspect gen-lua`"
    )


def test_gen_lua_check_detects_a_stale_file(tmp_path):
    path = tmp_path / "vu.lua"
    assert luagen.main_for_tests(["--output", str(path)]) == 0
    assert luagen.main_for_tests(["--output", str(path), "--check"]) == 0
    path.write_text(path.read_text() + "-- edited\n")
    assert luagen.main_for_tests(["--output", str(path), "--check"]) == 1


@pytest.mark.parametrize("luac", ["luac5.2", "luac5.4"])
def test_parses_with_lua(luac):
    proc = subprocess.run([luac, "-p", str(W.LUA)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_no_native_bit_operators_or_bit32():
    code = "\n".join(ln.split("--")[0] for ln in W.LUA.read_text().splitlines())
    assert not re.search(r"\bbit32\s*[.\[]", code)  # the library, not a field named bit32
    assert not re.search(r"[^<>=~]\s*(<<|>>)\s*[^=]", code)
    assert not re.search(r"\w\s*&\s*\w", code)


@pytest.fixture(scope="module")
def dissected(sample_captures):
    return {name: W.dissect(path) for name, path in sample_captures.items()}


@pytest.mark.parametrize("name", ["every_le", "every_be", "framing"])
def test_agrees_with_python(name, sample_captures, dissected):
    lua = dissected[name]
    py = W.python_views(sample_captures[name])
    assert not lua.lua_errors, lua.lua_errors[:5]
    errors = W.compare(py, lua)
    assert not errors, "\n".join(errors[:30])
    assert len(lua.views) == len(py)


def test_sample_holds_every_request_and_reply_alternative(sample_captures):
    seen = {
        (m["channel"], m["name"], m["reply"], m["layout"])
        for m in W.python_views(sample_captures["every_le"])
    }
    for spec in (*FRONTEND_REQUESTS, *BACKEND_REQUESTS):
        for lay in spec.request:
            assert (spec.channel, spec.name, False, lay.name) in seen
        for lay in spec.reply:
            assert (spec.channel, spec.name, True, lay.name) in seen


@pytest.mark.parametrize("name", ["every_le", "every_be"])
def test_no_malformed_on_well_formed_messages(name, sample_captures, dissected):
    py = W.python_views(sample_captures[name])
    assert not [p for m in py for p in m["problems"] if CODES[p["code"]].group == "malformed"]
    lua = dissected[name]
    assert lua.malformed == []
    assert not [c for _, c in lua.experts if CODES[c].group == "malformed"]


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_real_captures_agree(capture):
    lua = W.dissect(capture)
    assert not lua.lua_errors, lua.lua_errors[:5]
    errors = W.compare(W.python_views(capture), lua)
    assert not errors, "\n".join(errors[:30])


@pytest.mark.parametrize("order", ["<", ">"])
def test_vring_index_past_the_cap_agrees_with_python(order, tmp_path):
    """Past dataplane MAX_RINGS an index is out of range and keeps no state, on both sides."""
    path = W.write_capture(
        tmp_path / "cap.pcapng", S.vring_cap_frames(order=order), big_endian=order == ">"
    )
    py, lua = W.agreeing_views(path)
    out = [
        (m["name"], m["payload"].get("index"), m["reply"])
        for m in py
        if "vring_out_of_range" in {p["code"] for p in m["problems"]}
    ]
    big = [1024, 0xFFFFFFFF]
    assert out == [
        *(x for i in big for x in (("VRING_KICK", i, False), ("GET_VRING_BASE", i, False))),
        ("SET_VRING_NUM", 2, False),
        ("SET_VRING_NUM", 1029, False),
    ]
    not_started = [
        m["payload"]["index"]
        for m in py
        if "vring_not_started" in {p["code"] for p in m["problems"]}
    ]
    assert not_started == big  # the kick past the cap started nothing


def test_requests_past_max_pending_are_given_up_as_python_does(tmp_path):
    """A front-end flooding requests a back-end never answers: both sides keep
    state.MAX_PENDING waiting and give the oldest up with missing_reply."""
    path = W.write_capture(tmp_path / "cap.pcapng", S.pending_flood_frames(extra=5))
    py, lua = W.agreeing_views(path)
    given_up = [
        m["frame"] for m in py if any(p["text"].startswith("given up") for p in m["problems"])
    ]
    assert given_up == [m["frame"] for m in py[1:6]]  # (the rest: capture ended first)
    assert py[-1]["reply_to"] == py[6]["frame"]
    out = subprocess.run(
        ["tshark", "-2", "-r", str(path), "-X", f"lua_script:{W.LUA}", "-T", "fields"]
        + ["-e", "frame.number", "-e", "_ws.expert.message"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lua_given_up = [
        int(n)
        for n, _, text in (ln.partition("\t") for ln in out.splitlines())
        if "given up" in text
    ]
    assert lua_given_up == given_up


def test_regions_past_max_regions_are_not_kept_as_python_does(tmp_path):
    """No slot count announced and ever more ADD_MEM_REG: both sides say too_many_regions
    past dataplane MAX_REGIONS and keep no more."""
    from vuinspect.dataplane.memory import MAX_REGIONS

    path = W.write_capture(tmp_path / "cap.pcapng", S.region_flood_frames(extra=5))
    py, lua = W.agreeing_views(path)
    flagged = [
        i for i, m in enumerate(py) if "too_many_regions" in {p["code"] for p in m["problems"]}
    ]
    assert flagged == list(range(MAX_REGIONS + 1, MAX_REGIONS + 6))


def test_memory_slots_count_regions_as_python_does(tmp_path):
    """Regions added and removed (a removal takes every region of its key) against the
    back-end's slots: the same too_many_regions frames in Lua as in Python."""
    path = W.write_capture(tmp_path / "regions.pcapng", S.region_frames(adds=3))
    py, lua = W.agreeing_views(path)
    adds = [m for m in py if m["name"] == "ADD_MEM_REG"]
    over = [
        i for i, m in enumerate(adds) if "too_many_regions" in {p["code"] for p in m["problems"]}
    ]
    assert over == [2, 4, 5, 6, 7]  # A A B | remove A | C D | 3 more, all past the 2 slots
    want = {adds[i]["frame"] for i in over}
    assert {f for f, code in lua.experts if code == "too_many_regions"} == want


# -- problem codes as expert info -----------------------------------------------------------


@pytest.fixture(scope="module")
def problems_capture(capdir):
    frames, conns = [], {}
    for i, (code, session) in enumerate(S.problem_frames().items()):
        conns[code] = 100 + i
        frames += [dataclasses.replace(f, conn=100 + i) for f in session]
    path = W.write_capture(capdir / "problems.pcapng", frames)
    return path, conns


def test_every_problem_code_has_a_trigger():
    assert set(S.problem_frames()) == CONTROL_CODES


def test_each_problem_code_appears_as_expert_info(problems_capture):
    path, conns = problems_capture
    frames = list(read_frames(path))
    conn_of = {i + 1: f.conn for i, f in enumerate(frames)}
    py = W.python_views(path)
    lua = W.dissect(path)
    assert not lua.lua_errors
    for code, conn in conns.items():
        assert code in {p["code"] for m in py if m["conn"] == conn for p in m["problems"]}, (
            f"the sample for {code} does not trigger it in Python"
        )
        assert code in {c for n, c in lua.experts if conn_of[n] == conn}, f"no expert {code}"


def test_problem_sessions_agree_with_python(problems_capture):
    path, _ = problems_capture
    errors = W.compare(W.python_views(path), W.dissect(path))
    assert not errors, "\n".join(errors[:30])


# -- display filters and the stats tap --------------------------------------------------------


def _frames_matching(path: Path, flt: str) -> set[int]:
    proc = W.tshark(
        "-r",
        str(path),
        "-X",
        f"lua_script:{W.LUA}",
        "-2",
        "-Y",
        flt,
        "-T",
        "fields",
        "-e",
        "frame.number",
    )
    assert proc.returncode == 0, proc.stderr
    return {int(x) for x in proc.stdout.split()}


def test_latency_filter_and_its_old_name(sample_captures):
    path = sample_captures["every_le"]
    want = {m["frame"] for m in W.python_views(path) if m["latency_us"]}
    assert want and _frames_matching(path, "vhost_user.latency_us > 0") == want
    assert _frames_matching(path, "vhost_user.response_time > 0") == want


def test_vocabulary_filters_select_what_read_selects(sample_captures):
    """Bare vhost_user.need_reply means true (the field is only there when set), as in our
    filter; reply/direction/reply_to/problems carry the NDJSON keys' values."""
    path = sample_captures["every_le"]
    py = W.python_views(path)
    msgs = [m for m in py if m["kind"] == "message"]
    idx = next(m["payload"]["index"] for m in msgs if "index" in m["payload"])
    for flt, want in (
        ("vhost_user.need_reply", {m["frame"] for m in msgs if m["need_reply"]}),
        ("vhost_user.reply == 1", {m["frame"] for m in msgs if m["reply"]}),
        ('vhost_user.direction == "b2f"', {m["frame"] for m in py if m["direction"] == "b2f"}),
        ("vhost_user.reply_to", {m["frame"] for m in py if m["reply_to"]}),
        (
            f"vhost_user.payload.index == {idx}",
            {m["frame"] for m in msgs if m["payload"].get("index") == idx},
        ),
    ):
        assert want and _frames_matching(path, flt) == want, flt


def test_feature_bit_filter(sample_captures):
    path = sample_captures["every_le"]
    want = {
        m["frame"]
        for m in W.python_views(path)
        if m["layout"] == "protocol_features" and "REPLY_ACK" in m["payload"]["features_names"]
    }
    assert (
        want
        and _frames_matching(path, "vhost_user.payload.features.protocol.reply_ack == 1") == want
    )


def test_request_filter_is_the_python_request_on_both_channels(sample_captures):
    """vhost_user.request is Python's request (header id) on either channel, as `read
    'request == 5'` selects; the old vhost_user.backend_request stays for the back-end's."""
    path = sample_captures["every_le"]
    py = W.python_views(path)
    want = {m["frame"] for m in py if m["kind"] == "message" and m["request"] == 5}
    back = {m["frame"] for m in py if m["channel"] == "backend" and m["request"] == 5}
    assert back and want - back
    assert _frames_matching(path, "vhost_user.request == 5") == want
    assert _frames_matching(path, "vhost_user.backend_request == 5") == back


def test_kind_filter_names_the_frame_kind_as_read_names_events(sample_captures):
    """vhost_user.kind is the frame's kind (Frame.kind): its event values are read's
    `kind` values; "data" is a frame of message bytes, read's message and raw records."""
    path = sample_captures["every_le"]
    py = W.python_views(path)
    for kind in ("open", "close"):
        want = {m["frame"] for m in py if m["kind"] == kind}
        assert want and _frames_matching(path, f'vhost_user.kind == "{kind}"') == want
    data = {m["frame"] for m in py if m["kind"] in ("message", "raw")}
    assert data and _frames_matching(path, 'vhost_user.kind == "data"') == data


def test_stats_tap_counts_like_the_python_sessions(sample_captures):
    path = sample_captures["every_le"]
    pipe = Pipeline()
    for _ in pipe.run(read_frames(path)):
        pass
    want: dict[str, tuple[int, int, int]] = {}
    for s in pipe.sessions.values():
        for key, st in s.stats.items():
            c, r, p = want.get(key, (0, 0, 0))
            want[key] = (c + st.count, r + st.replies, p + st.problem_count)
    proc = W.tshark("-q", "-r", str(path), "-X", f"lua_script:{W.LUA}", "-z", "vhost_user,stat")
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and re.match(r"^(main|backend):", parts[0]):
            rows[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[-1]))
            assert parts[3] == "-" or float(parts[3]) >= 0
    assert rows == want
    # the header names its columns whole (it said "Probl")
    assert any(line.split()[-1:] == ["Problems"] for line in proc.stdout.splitlines())


# -- robustness ---------------------------------------------------------------------------------


def _fuzzed(n: int, seed: int) -> list[Frame]:
    rng = random.Random(seed)
    base = [f for f in S.every_message_frames(seed=seed) if f.kind == "data"]
    out = []
    for i in range(n):
        f = rng.choice(base)
        data = bytearray(f.data)
        for _ in range(rng.randrange(1, 5)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data) + 1)]
        if rng.random() < 0.05:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        out.append(
            dataclasses.replace(
                f, data=bytes(data), conn=rng.randrange(1, 4), ts_ns=S.BASE_NS + i * 1000
            )
        )
    return out


def test_fuzzed_capture_agrees_with_python(capdir):
    """Mutated messages: framing, resync, truncation, odd sizes and pairing still agree."""
    path = W.write_capture(capdir / "fuzz_agree.pcapng", _fuzzed(3000, seed=11))
    lua = W.dissect(path)
    assert not lua.lua_errors, lua.lua_errors[:5]
    errors = W.compare(W.python_views(path), lua)
    assert not errors, "\n".join(errors[:30])


def test_fuzzed_capture_dissects_without_lua_errors(capdir):
    path = W.write_capture(capdir / "fuzz.pcapng", _fuzzed(3000, seed=12))
    raw = bytearray(path.read_bytes())
    rng = random.Random(5)
    starts = [m.start() for m in re.finditer(rb"VU\x01", bytes(raw))]
    for pos in rng.sample(starts, len(starts) // 10):  # damage some pseudo-headers too
        raw[pos + rng.randrange(2, 14)] = rng.randrange(256)
    path.write_bytes(bytes(raw))
    proc = W.tshark("-r", str(path), "-X", f"lua_script:{W.LUA}", "-2", "-V", timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Lua Error" not in proc.stdout and "Lua Error" not in proc.stderr
    assert proc.stdout.count("vhost-user") >= 3000


# -- pyshark ----------------------------------------------------------------------------------


def test_pyshark_reads_our_fields(sample_captures, tmp_path, monkeypatch):
    pytest.importorskip("pyshark")
    monkeypatch.setenv("HOME", str(tmp_path))  # no installed copy of the dissector
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    path = sample_captures["every_le"]
    py = W.python_views(path)
    first = {}
    for m in py:
        first.setdefault(m["frame"], m)
    # pyshark drives tshark through asyncio; earlier async tests (Textual's) may leave the
    # main thread without a current loop, so give it its own (pyshark_capture then watches
    # tshark by pidfd: asyncio's threaded watcher loses its exit status under load).
    loop = asyncio.new_event_loop()
    cap = pyshark_capture(path, eventloop=loop)
    try:
        checked = 0
        for pkt in cap:
            m = first[int(pkt.number)]
            layer = pkt["vhost_user"]
            if m["kind"] != "message":
                continue
            assert int(layer.request) == m["request"]  # not .int_value (raw LE hex)
            if m["channel"] == "backend":  # the old name, a hidden alias
                assert int(layer.backend_request) == m["request"]
            assert layer.name == m["name"]
            assert int(layer.size) == m["size"]
            checked += 1
    finally:
        cap.close()
    assert checked > 100


def _summary(m) -> str:
    """What the Info column shows for one message: the CLI's words for it."""
    from vuinspect.render import payload_summary

    if m.is_event:
        return f"{m.name} {payload_summary(m)}"
    text = (
        payload_summary(m)
        if m.kind == "raw"
        else (
            m.name
            + (" reply" if m.reply else "")
            + (" (need_reply)" if m.need_reply and not m.reply else "")
        )
    )
    summary = payload_summary(m)
    if m.kind != "raw" and summary:
        text += " " + summary
    if m.fds:
        text += " fds=[" + ", ".join(m.fds) + "]"
    return text


@pytest.mark.parametrize("name", ["every_le", "framing"])
def test_info_column_reads_like_the_cli(name, sample_captures):
    path = sample_captures[name]
    by_frame: dict[int, list] = {}
    for m in Pipeline().run(read_frames(path)):
        by_frame.setdefault(m.frame, []).append(m)
    proc = W.tshark(
        "-r",
        str(path),
        "-X",
        f"lua_script:{W.LUA}",
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "_ws.col.Info",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(list(read_frames(path)))
    for line in lines:
        number, info = line.split("\t", 1)
        msgs = by_frame.get(int(number), [])
        want = " | ".join(_summary(m) for m in msgs)
        if msgs and msgs[0].channel != "main" and not msgs[0].is_event:
            want = f"[{msgs[0].channel} channel] {want}"
        assert info.startswith(want), f"frame {number}: {info!r} != {want!r}"


# -- the runtime files and hostile text ------------------------------------------------------


@pytest.mark.parametrize("luac", ["luac5.2", "luac5.4"])
def test_runtime_lua_files_parse(luac):
    """The runtime that is not generated lives in real .lua files of the package."""
    from importlib import resources

    for name in luagen.RUNTIME_FILES:
        with resources.as_file(resources.files("vuinspect.wireshark") / name) as path:
            proc = subprocess.run(
                [luac, "-p", str(path)], capture_output=True, text=True, check=False
            )
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_no_bare_request_numbers_in_the_runtime():
    from importlib import resources

    for name in luagen.RUNTIME_FILES:
        code = (resources.files("vuinspect.wireshark") / name).read_text()
        assert not re.search(r"\b(req|r|request|kind)\s*[=~]=\s*\d", code), name


def test_control_characters_from_a_capture_are_escaped(capdir):
    """Issue 11 item 5: labels, notes and fd texts reach Info and the tree escaped."""
    evil = "\x1b]0;TITLE\x07\x1b[2J\nforged line\x9b"
    open_json = json.dumps({"label": evil, "orientation": "frontend-connects"}).encode()
    frames = [
        Frame(S.BASE_NS, 7, "main", "f2b", open_json, kind="open"),
        Frame(S.BASE_NS + 1000, 7, "main", "f2b", json.dumps({"text": evil}).encode(), kind="note"),
        Frame(
            S.BASE_NS + 2000,
            7,
            "main",
            "f2b",
            bytes.fromhex("0d0000000100000008000000") + b"\x00" * 8,
            (f"memfd:{evil}",),
        ),
    ]
    path = W.write_capture(capdir / "evil.pcapng", frames)
    # Only our part of the output: the frame tree's interface name is the capture writer's.
    fields = ["-T", "fields"] + [
        x
        for f in (
            "_ws.col.Info",
            "vhost_user.payload.label",
            "vhost_user.payload.text",
            "vhost_user.event.label",  # the old name
            "vhost_user.event.json",
            "vhost_user.fds",
            "vhost_user.pseudo.fd",
        )
        for x in ("-e", f)
    ]
    for args in (fields, ["-V", "-O", "vhost_user"]):
        proc = subprocess.run(
            ["tshark", "-r", str(path), "-X", f"lua_script:{W.LUA}", *args],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.decode("utf-8", "replace")
        if args[0] == "-V":
            out = "\n".join(block.split("\nvhost-user", 1)[-1] for block in out.split("\n\n"))
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "forged line" in out and "\nforged line" not in out
        assert "\\x1b]0;TITLE\\x07\\x1b[2J\\nforged line\\x9b" in out


@pytest.mark.parametrize("name", ["every_le", "framing"])
def test_two_pass_columns_are_the_single_pass_ones(name, sample_captures):
    """tshark -2 builds the Info text on the first pass (no columns there) and only sets the
    columns on the second: what it shows must not differ."""
    path = sample_captures[name]
    outs = []
    for extra in ([], ["-2"]):
        proc = W.tshark(
            "-r",
            str(path),
            "-X",
            f"lua_script:{W.LUA}",
            *extra,
            "-T",
            "fields",
            "-e",
            "_ws.col.Source",
            "-e",
            "_ws.col.Destination",
            "-e",
            "_ws.col.Info",
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1] and outs[0].count("\n") == len(list(read_frames(path)))


def test_expert_severities_follow_the_problem_table(problems_capture):
    """Issue 12 item 6: each expert info is at its code's severity in protocol/problems.py,
    and vhost_user.severity is the highest severity of the message's problems."""
    import xml.etree.ElementTree as ET

    levels = {"error": 0x00800000, "warning": 0x00600000, "note": 0x00400000}
    path, _ = problems_capture
    proc = W.tshark("-r", str(path), "-X", f"lua_script:{W.LUA}", "-2", "-T", "pdml")
    assert proc.returncode == 0, proc.stderr
    seen = set()
    for proto in ET.fromstring(proc.stdout).iter("proto"):
        if proto.get("name") != "vhost_user":
            continue
        worst = None
        for ex in proto.iter("field"):
            if ex.get("name") != "_ws.expert":
                continue
            code = next(
                f.get("name")
                for f in ex.iter("field")
                if f.get("name", "").startswith("vhost_user.expert.")
            )
            code = code.removeprefix("vhost_user.expert.")
            sev = int(
                next(
                    f.get("show")
                    for f in ex.iter("field")
                    if f.get("name") == "_ws.expert.severity"
                ),
                0,
            )
            if code in CODES:
                assert sev == levels[CODES[code].severity], code
                seen.add(code)
                rank = ("error", "warning", "note").index(CODES[code].severity)
                worst = rank if worst is None else min(worst, rank)
        shown = [
            f.get("show") for f in proto.iter("field") if f.get("name") == "vhost_user.severity"
        ]
        if worst is not None:
            assert shown == [("error", "warning", "note")[worst]]
    assert seen == CONTROL_CODES


def test_no_accidental_globals():
    """A name the runtime uses before its `local` line silently becomes a global (nil)."""
    proc = subprocess.run(
        ["luac5.2", "-l", "-p", str(W.LUA)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    used = set(re.findall(r'[GS]ETTABUP.*_ENV "(\w+)"', proc.stdout))
    wireshark = {
        "ProtoField",
        "ProtoExpert",
        "Proto",
        "base",
        "expert",
        "frametype",
        "UInt64",
        "Int64",
        "NSTime",
        "ByteArray",
        "Listener",
        "TextWindow",
        "register_menu",
        "register_stat_cmd_arg",
        "gui_enabled",
        "MENU_STAT_GENERIC",
        "bit",
    }
    lua = {
        "ipairs",
        "pairs",
        "type",
        "tostring",
        "tonumber",
        "string",
        "table",
        "math",
        "pcall",
        "print",
        "next",
        "io",
        "collectgarbage",
        "setmetatable",
        "error",  # runtime_effects.lua refuses, at load, a rule table it cannot run
        "assert",
    }
    assert used <= wireshark | lua, used - wireshark - lua


def test_data_plane_frames_show_their_sample_and_problems(capdir):
    """Ring and notify frames (pseudo-header kinds 4 and 5): summary, JSON, the sample's
    data-plane problems as experts; a hostile problem list is bounded and unknown codes skipped."""
    ring = {
        "vring": 0,
        "layout": "split",
        "num": 256,
        "ok": True,
        "avail_idx": 7,
        "used_idx": 5,
        "in_flight": 2,
        "problems": [
            {"code": "lost_call", "severity": "warning", "text": "no call\x1b[2J"},
            {"code": "no_such_code", "text": "x"},
        ]
        * 100,
    }
    notify = {"vring": 1, "signal": "kick", "count": 3, "first_ns": 1, "last_ns": 2}
    frames = [
        Frame(S.BASE_NS, 9, "main", "f2b", json.dumps(ring).encode(), kind="ring"),
        Frame(S.BASE_NS + 10, 9, "main", "f2b", json.dumps(notify).encode(), kind="notify"),
    ]
    path = W.write_capture(capdir / "dataplane.pcapng", frames)
    proc = W.tshark(
        "-r", str(path), "-X", f"lua_script:{W.LUA}", "-T", "fields", "-e", "_ws.col.Info"
    )
    assert proc.returncode == 0 and "Lua Error" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == [
        "RING vring 0 split avail=7 used=5 in_flight=2",
        "NOTIFY vring 1 kick x3",
    ]
    lua = W.dissect(path)
    assert not lua.lua_errors
    # the first 64 entries of the list are looked at: 32 known codes among them
    assert [c for n, c in lua.experts if n == 1] == ["lost_call"] * 32


def _tshark_fields(path: Path, fields: list[str], *extra: str) -> list[list[str]]:
    proc = W.tshark(
        "-r",
        str(path),
        "-X",
        f"lua_script:{W.LUA}",
        *extra,
        "-T",
        "fields",
        *[a for f in fields for a in ("-e", f)],
    )
    assert proc.returncode == 0 and "Lua Error" not in proc.stdout + proc.stderr, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()]


def test_ring_and_notify_fields_agree_with_read_json(capdir):
    """vhost_user.payload.<key> of ring and notify frames (C.DATAPLANE, from fields.py) are
    what `read --json` says, ns times to the last digit; a display filter on them selects
    the frames the vuinspect filter selects."""
    from vuinspect.wireshark.fields import build_registry

    path = W.write_capture(capdir / "dataplane_fields.pcapng", S.dataplane_frames())
    out = subprocess.run(
        [sys.executable, "-m", "vuinspect", "read", "--rings", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    py = {m["frame"]: m for m in map(json.loads, out.splitlines())}
    dp = build_registry().dataplane
    keys = list(dict.fromkeys(k for kind in ("ring", "notify") for k, _, _ in dp[kind]))
    assert {
        "vring",
        "layout",
        "num",
        "ok",
        "avail_idx",
        "used_idx",
        "in_flight",
        "avail_wrap",
        "used_wrap",
        "used_event",
        "avail_event",
        "event",
        "signal",
        "count",
        "first_ns",
        "last_ns",
    } <= set(keys)
    rows = _tshark_fields(
        path, ["frame.number", "vhost_user.kind", *[f"vhost_user.payload.{k}" for k in keys]]
    )
    kinds = {"4": "ring", "5": "notify"}
    seen = {"ring": 0, "notify": 0}
    for number, kind, *values in rows:
        if kind not in kinds:
            continue
        m = py[int(number)]
        assert m["kind"] == kinds[kind]
        seen[m["kind"]] += 1
        own = {k for k, _, _ in dp[m["kind"]]}
        for key, got in zip(keys, values, strict=True):
            want = m["payload"].get(key) if key in own else None
            want = "" if want is None else str(int(want)) if isinstance(want, bool) else str(want)
            assert got == want, (number, key, got, want)
    assert seen == {"ring": 9, "notify": 3}
    for wireshark, ours in (
        ("vhost_user.payload.in_flight > 0", lambda p: p.get("in_flight", 0) > 0),
        ('vhost_user.payload.signal == "call"', lambda p: p.get("signal") == "call"),
        ('vhost_user.payload.layout == "packed"', lambda p: p.get("layout") == "packed"),
        (
            "vhost_user.payload.first_ns == 1764000000124456790",  # no double
            lambda p: p.get("first_ns") == 1764000000124456790,
        ),
    ):
        got = [int(r[0]) for r in _tshark_fields(path, ["frame.number"], "-Y", wireshark)]
        want = [n for n, m in py.items() if m["kind"] in seen and ours(m["payload"])]
        assert got == want and want, (wireshark, got, want)


def test_ring_fields_from_a_hostile_file_are_skipped_not_errors(capdir):
    """Values of the wrong type or range (the file can say anything) are not shown."""
    bad = {
        "vring": -1,
        "layout": 5,
        "num": 1e300,
        "ok": "yes",
        "avail_idx": 2.5,
        "in_flight": 1 << 40,
        "ts_ns": "12",
        "event": "\x1b[2Jx",
        "used_idx": True,
    }
    notify = {
        "vring": 1 << 32,
        "signal": ["kick"],
        "count": None,
        "first_ns": 1 << 70,
        "last_ns": -5,
    }
    frames = [
        Frame(S.BASE_NS, 9, "main", "f2b", json.dumps(bad).encode(), kind="ring"),
        Frame(S.BASE_NS + 10, 9, "main", "f2b", json.dumps(notify).encode(), kind="notify"),
    ]
    path = W.write_capture(capdir / "dataplane_bad.pcapng", frames)
    fields = [
        "vring",
        "layout",
        "num",
        "ok",
        "avail_idx",
        "in_flight",
        "ts_ns",
        "used_idx",
        "signal",
        "count",
        "first_ns",
        "last_ns",
    ]
    rows = _tshark_fields(path, [f"vhost_user.payload.{k}" for k in fields])
    assert rows == [[""] * len(fields)] * 2
    event = _tshark_fields(path, ["vhost_user.payload.event"])[0][0]
    assert event == "\\x1b[2Jx"
    assert not W.dissect(path).lua_errors


# -- merged captures (issue 12 item 5, docs/capture-format.md §8) -----------------------------


def _merged(tmp_path: Path, how: str, *parts: Path) -> Path:
    out = tmp_path / f"{how}.pcapng"
    if how == "mergecap":
        subprocess.run(["mergecap", "-w", str(out), *map(str, parts)], check=True, timeout=60)
    else:
        out.write_bytes(b"".join(p.read_bytes() for p in parts))
    return out


def _agree_on_conns(path: Path) -> set[int]:
    lua = W.dissect(path)
    assert not lua.lua_errors, lua.lua_errors[:5]
    py = W.python_views(path)
    errors = W.compare(py, lua)
    assert not errors, "\n".join(errors[:30])
    py_conns = {m["frame"]: m["conn"] for m in py}
    assert {n: lua.conns.get(n) for n in py_conns} == py_conns
    assert not [c for _, c in lua.experts]  # no false features_not_offered or pairing across runs
    return set(py_conns.values())


@pytest.mark.parametrize("how", ["mergecap", "cat"])
def test_merged_runs_are_distinct_connections(how, tmp_path):
    path = _merged(tmp_path, how, W.REPO / "captures/blk.pcapng", W.REPO / "captures/net.pcapng")
    assert _agree_on_conns(path) == {1, 2}


def test_cat_renumbers_past_a_number_its_own_capture_took(tmp_path):
    """cat a b, a with conn 1 and b with conns 1 and 2: shown 1, then b's as 2 and 3 (not 2, 2)."""
    frames = list(read_frames(W.REPO / "captures/blk.pcapng"))
    a = W.write_capture(tmp_path / "a.pcapng", frames)
    b = W.write_capture(
        tmp_path / "b.pcapng", frames + [dataclasses.replace(f, conn=2) for f in frames]
    )
    assert _agree_on_conns(_merged(tmp_path, "cat", a, b)) == {1, 2, 3}


# -- one message above 4096 bytes, framed whole by the sender ----------------------------------


def test_one_oversize_message_per_frame_is_decoded_flagged(tmp_path):
    """As decoder.StreamFramer's fast path: decoded whole and flagged oversize, not raw +
    framing_lost; the same bytes split over two frames, or after other bytes, still lose framing."""
    t = iter(range(1_000_000, 10**9, 1000))
    big = S.raw(
        5, struct.pack("<II", 1, 0) + b"\0" * 32 + b"\x11" * 4200
    )  # SET_MEM_TABLE + trailing
    frames = [
        Frame(next(t), 4, "main", "f2b", S.raw(1)),
        Frame(next(t), 4, "main", "f2b", big, ("memfd:ram",)),
        Frame(next(t), 4, "main", "f2b", S.raw(24, b"\x00" * 5000)),  # GET_CONFIG-ish number
        Frame(next(t), 4, "main", "f2b", big[:100]),
        Frame(next(t), 4, "main", "f2b", big[100:]),
        Frame(next(t), 4, "main", "f2b", S.raw(1) + big),
    ]
    path = W.write_capture(tmp_path / "oversize.pcapng", frames)
    py = W.python_views(path)
    by_frame: dict[int, set[str]] = {}
    for m in py:
        by_frame.setdefault(m["frame"], set()).update(p["code"] for p in m["problems"])
    assert "oversize" in by_frame[2] and "framing_lost" not in by_frame[2]
    assert "framing_lost" in by_frame[6]
    lua = W.dissect(path)
    assert not lua.lua_errors, lua.lua_errors[:5]
    errors = W.compare(py, lua)
    assert not errors, "\n".join(errors[:30])
    assert lua.views[(2, 0)].get("name") == "SET_MEM_TABLE"


# -- rule and addon firings (note events, docs/rules.md) --------------------------------------


def test_rule_firings_are_shown_with_an_expert_and_rule_fields(tmp_path):
    import xml.etree.ElementTree as ET

    from vuinspect.encode import build
    from vuinspect.frames import event_frame
    from vuinspect.rules import RuleSet, parse_rules
    from vuinspect.verdict import firing_note

    rules = RuleSet(
        parse_rules(
            [
                "mask-features VIRTIO_F_VERSION_1: name == GET_FEATURES && reply",
                "delay 10ms: name == SET_OWNER",
            ]
        )
    ).for_conn(1, str)
    frames, t = [event_frame("open", 1000, 1, {"label": "r.sock"})], 2000
    for direction, data in (
        ("f2b", build("main", 1)),
        ("b2f", build("main", 1, {"features": 1 << 32 | 1 << 30}, reply=True)),
        ("f2b", build("main", 3)),
    ):
        verdict = rules.judge(t, "main", direction, data, [])
        for note in verdict.notes if verdict else []:  # the proxy's order: note, then message
            frames.append(event_frame("note", t, 1, note))
            t += 10
        frames.append(Frame(t, 1, "main", direction, verdict.data if verdict else data))
        t += 1000
    frames.append(
        event_frame(
            "note",
            t,
            1,
            {
                "text": "addon x: error",
                "addon": "x.py",
                "hook": "message",
                "action": "error",
                "error": "boom\x1b[31m",
                "fired": False,
                "direction": "f2b",
                "original": "zz",
                "new": "",
            },
        )
    )
    held = build("main", 3)  # the intercept's note: verdict.firing_note with its hold number
    frames.append(
        event_frame(
            "note",
            t + 10,
            1,
            firing_note(
                "intercept #7: held", {"rule": "intercept: x"}, "hold", held, held, "f2b", hold=7
            ),
        )
    )
    path = W.write_capture(tmp_path / "rules.pcapng", frames)
    proc = W.tshark(
        "-r",
        str(path),
        "-X",
        f"lua_script:{W.LUA}",
        "-T",
        "pdml",
        "-Y",
        "vhost_user.payload.rule || vhost_user.payload.addon",
    )
    assert "Lua" not in proc.stderr, proc.stderr[-2000:]
    shown = []
    for pkt in ET.fromstring(proc.stdout).iter("packet"):
        f = {}
        for el in pkt.iter("field"):
            if el.get("name", "").startswith("vhost_user."):
                f.setdefault(
                    el.get("name"), el.get("show") if el.get("show") else el.get("showname")
                )
            if el.get("name") == "_ws.expert.severity":
                f["severity"] = el.get("showname")
        shown.append(f)
    mask, delay, addon, hold = shown
    P = "vhost_user.payload."  # a note's keys: payload.<key>, as read and the filter name them
    assert mask[P + "rule"].startswith("mask-features VIRTIO_F_VERSION_1")
    assert mask[P + "action"] == "mask-features"
    assert mask[P + "direction"] == "b2f"
    orig = build("main", 1, {"features": 1 << 32 | 1 << 30}, reply=True)
    assert mask[P + "original"].replace(":", "") == orig.hex()
    assert mask[P + "new"].replace(":", "") != orig.hex()
    assert mask[P + "fired"] == "1" and "vhost_user.rule.injected" in mask
    assert mask["severity"] == "Severity level: Note"
    assert delay[P + "action"] == "delay" and "vhost_user.rule.injected" in delay
    # an addon that could not act: a chat-level expert, escaped text, bad hex not shown
    assert addon[P + "addon"] == "x.py" and addon[P + "hook"] == "message"
    assert P + "rule" not in addon and addon[P + "fired"] == "0"
    assert addon[P + "error"] == "boom\\x1b[31m"
    assert "vhost_user.rule.not_fired" in addon and addon["severity"] == "Severity level: Chat"
    assert P + "original" not in addon
    assert hold[P + "hold"] == "7" and hold[P + "action"] == "hold"
    assert "vhost_user.rule.hold" not in hold  # never had a vhost_user.rule.* name
    # the old names stay, hidden, with the same values
    assert mask["vhost_user.rule"] == mask[P + "rule"] and addon["vhost_user.rule"] == "addon x.py"
    for note in shown:
        old = {
            k.removeprefix("vhost_user.rule."): v
            for k, v in note.items()
            if k.startswith("vhost_user.rule.")
        }
        old = {k: v for k, v in old.items() if k not in ("injected", "not_fired")}
        new = {k.removeprefix(P): v for k, v in note.items() if k.startswith(P)}
        new = {k: v for k, v in new.items() if k not in ("rule", "text")}
        new.pop("hold", None)  # new since the rename: no old name
        assert old and old.keys() == new.keys()
        assert all(old[k] == v for k, v in new.items() if not v.endswith(": none")), note
    # filterable: only the frame of the feature mask
    proc = W.tshark(
        "-r",
        str(path),
        "-X",
        f"lua_script:{W.LUA}",
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-Y",
        'vhost_user.payload.action == "mask-features" && vhost_user.rule.action == "mask-features"',
    )
    assert proc.stdout.split() == ["3"]  # open, GET_FEATURES, the note, then the masked reply
