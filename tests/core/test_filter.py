"""The filter language shared by `vuinspect read --filter` and the TUI."""

from __future__ import annotations

import pytest

from vuinspect.filter import FilterError, compile_filter
from vuinspect.pipeline import Pipeline
from vuinspect.samples import device_start


@pytest.fixture(scope="module")
def messages():
    return list(Pipeline().run(device_start()))


def select(messages, expr):
    pred = compile_filter(expr)
    return [m for m in messages if pred(m)]


def test_name_and_conn(messages):
    got = select(messages, "name == SET_MEM_TABLE and conn == 1")
    assert [m.reply for m in got] == [False, True]


def test_old_names_match(messages):
    assert select(messages, "name == SET_SLAVE_REQ_FD") == select(
        messages, "name == SET_BACKEND_REQ_FD"
    )
    assert select(messages, "name == set_backend_req_fd")


def test_payload_comparisons(messages):
    got = select(messages, "payload.num > 100 and not reply")
    assert {m.name for m in got} == {"SET_VRING_NUM"}
    assert select(messages, "payload.regions.memory_size > 0x1000000")[0].name == "SET_MEM_TABLE"
    assert select(messages, "payload.features_names == REPLY_ACK")


def test_bare_fields_and_lists(messages):
    assert select(messages, "problems") == []
    assert len(select(messages, "fds")) == len([m for m in messages if m.fds])
    assert {m.name for m in select(messages, "fds ~ memfd")} >= {"SET_MEM_TABLE"}
    assert all(m.channel == "backend" for m in select(messages, "channel == backend"))
    assert all(m.direction == "b2f" for m in select(messages, "dir == b2f"))


def test_or_not_parentheses_regex(messages):
    a = select(messages, "(name == SET_VRING_KICK or name == SET_VRING_CALL) and !reply")
    b = select(messages, 'name matches "^SET_VRING_(KICK|CALL)$" && reply == false')
    assert a == b and a
    assert select(messages, "latency_us >= 0") == [m for m in messages if m.latency_us is not None]
    assert len(select(messages, "not kind == message")) == 2  # open + close


@pytest.mark.parametrize(
    "expr,pos",
    [
        ("nme == X", 0),
        ("name ==", 7),
        ("name == OPEN and", 16),
        ("(name == OPEN", 13),
        ("name === X", 7),
        ("payload.num > 3 )", 16),
        ('name matches "("', 13),
        ("size $ 3", 5),
    ],
)
def test_errors_point_at_the_problem(expr, pos):
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    assert info.value.position == pos, str(info.value)


def test_empty_filter_matches_everything(messages):
    assert select(messages, "  ") == messages


# -- issue 11 item 7: deep or long filters never recurse per term ------------------------------


def test_long_and_or_chains_compile_and_run(messages):
    for op in ("or", "and", "||", "&&"):
        expr = f" {op} ".join(["name == SET_MEM_TABLE"] * 2000)
        got = select(messages, expr)
        assert got == select(messages, "name == SET_MEM_TABLE")
    mixed = " or ".join(f"(conn == {i} and not reply)" for i in range(1500))
    assert select(messages, mixed) == select(messages, "not reply")
    assert select(messages, "not " * 2001 + "reply") == select(messages, "not reply")


def test_nesting_up_to_the_limit_works_deeper_is_one_clear_error(messages):
    from vuinspect.filter import MAX_DEPTH

    ok = "(" * MAX_DEPTH + "reply" + ")" * MAX_DEPTH
    assert select(messages, ok) == select(messages, "reply")
    for depth in (MAX_DEPTH + 1, 300, 100_000):
        with pytest.raises(FilterError, match="filter too deep") as info:
            compile_filter("(" * depth + "reply" + ")" * depth)
        assert info.value.position == MAX_DEPTH
    # alternating operators inside the limit stay correct
    expr = "(" * 40 + "reply" + " or conn == 99) and not kind == raw" * 40
    assert select(messages, expr) == select(messages, "reply")


# -- issue 12 item 2: filters that cannot match are errors with a suggestion -----------------


@pytest.mark.parametrize(
    "expr,words",
    [
        ("name == SET_MEM_TABL", ["unknown request name", "did you mean SET_MEM_TABLE"]),
        ("payload.foo > 1", ["unknown field 'payload.foo'"]),
        ("payload.nmu > 1", ["did you mean payload.num"]),
        ('conn > "abc"', ["conn is a number"]),
        ("dirction == f2b", ["did you mean direction"]),
        ("direction == f2c", ["one of: f2b, b2f"]),
        ("channel == frontend", ["unknown channel value 'frontend' (one of: main, backend)"]),
        ("problems == reply_flag", ["unknown problem code", "did you mean reply_flags"]),
        ("reply == maybe", ["reply is true or false"]),
        ("channel > main", ["use ==, !=, ~ or matches"]),
        ("payload.type == UPDATE", ["payload.type is a number", "payload.type_name"]),
        ("request == SET_MEM_TABL", ["did you mean SET_MEM_TABLE"]),
    ],
)
def test_unknown_names_values_types_are_errors(expr, words):
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    text = str(info.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_aliases_and_canonical_names_agree(messages):
    pairs = [
        ("dir == b2f", "direction == b2f"),
        ("is_reply", "reply"),
        ("problem", "problems"),
        ("problem_codes == reply_flags", "problems == reply_flags"),
        ("request == SET_MEM_TABLE", "name == SET_MEM_TABLE"),
        ("conn == c1", "conn == 1"),
        ("vhost_user.payload.num > 100", "payload.num > 100"),
        ("vhost_user.dir == f2b", "direction == f2b"),
    ]
    for old, new in pairs:
        assert select(messages, old) == select(messages, new), old
    assert select(messages, "direction == b2f")


def test_severities_bare_problems_means_warning_and_above():
    from vuinspect.message import Message
    from vuinspect.protocol.problems import problem

    note = Message(1, 1, 0, 1, "main", "f2b", problems=[problem("nonzero_padding")])
    warn = Message(2, 2, 0, 1, "main", "f2b", problems=[problem("unexpected_reply")])
    both = Message(
        3, 3, 0, 1, "main", "f2b", problems=[problem("nonzero_padding"), problem("missing_reply")]
    )
    clean = Message(4, 4, 0, 1, "main", "f2b")
    msgs = [note, warn, both, clean]
    assert [m.severity for m in msgs] == ["note", "warning", "error", None]
    assert select(msgs, "problems") == [warn, both]
    assert select(msgs, "problems == nonzero_padding") == [note, both]
    assert select(msgs, "severity == note") == [note]
    assert select(msgs, "severity") == [note, warn, both]
    assert note.to_dict()["severity"] == "note"


def test_completions_offer_fields_and_values():
    from vuinspect.filter import completions

    assert "direction" in completions("di") and "dir" in completions("di")
    assert "payload.num" in completions("payload.nu")
    assert "SET_MEM_TABLE" in completions("name == SET_M")
    assert "reply_flags" in completions("problems == rep")


# -- data plane: ring and notify messages (issue 13) ---------------------------------------------


def _dataplane_capture(tmp_path_factory):
    import sys
    from pathlib import Path

    from vuinspect.capture.writer import CaptureWriter

    sys.path.insert(0, str(Path(__file__).parents[1] / "wireshark"))
    from ws_samples import dataplane_frames

    path = tmp_path_factory.mktemp("dp") / "dataplane.pcapng"
    with CaptureWriter(path) as w:
        for f in dataplane_frames():
            w.write(f)
    return path


@pytest.fixture(scope="module")
def dp_capture(tmp_path_factory):
    return _dataplane_capture(tmp_path_factory)


@pytest.fixture(scope="module")
def dp_messages(dp_capture):
    from vuinspect.capture import read_frames

    return list(Pipeline().run(read_frames(dp_capture)))


def test_ring_and_notify_kinds_names_and_payload(dp_messages):
    rings = [m for m in dp_messages if m.kind == "ring"]
    notifies = [m for m in dp_messages if m.kind == "notify"]
    assert len(rings) == 9 and len(notifies) == 3
    assert select(dp_messages, "kind == ring") == rings == select(dp_messages, "name == RING")
    assert (
        select(dp_messages, "kind == notify") == notifies == select(dp_messages, "name == notify")
    )
    assert [
        m.payload["avail_idx"] - m.payload["used_idx"]
        for m in select(dp_messages, "payload.in_flight > 0")
    ] == [4] * 5 + [1]
    stalled = select(dp_messages, "problems == backend_stalled")
    assert len(stalled) == 1 and stalled[0].kind == "ring" and stalled[0].payload["in_flight"] == 4
    assert [
        m.payload["resolved"][0]["code"]
        for m in select(dp_messages, "payload.resolved.duration_ns > 0")
    ] == ["backend_stalled"]
    assert [m.payload["count"] for m in select(dp_messages, "payload.signal == call")] == [1]
    assert [m.payload["vring"] for m in select(dp_messages, "payload.layout == packed")] == [1]
    assert len(select(dp_messages, "payload.chains.header.type_name == OUT")) == 1
    assert len(select(dp_messages, "kind == ring and payload.event == start")) == 1


def test_every_dataplane_key_is_known_and_every_known_key_is_written(dp_messages):
    """fields.RING_KEYS / NOTIFY_KEYS against what the sampler, notify and pipeline write:
    every key (and list item key) written is filterable, every listed key is written with
    its listed type (no invented names)."""
    from vuinspect.fields import NOTIFY_KEYS, RING_KEYS, payload_types

    types = {bool: "bool", int: "int", str: "str", list: "list"}
    for kind, table in (("ring", RING_KEYS), ("notify", NOTIFY_KEYS)):
        seen: dict[str, set[str]] = {}
        todo = [("", m.payload) for m in dp_messages if m.kind == kind]
        while todo:  # flat walk: dicts and lists of dicts
            prefix, obj = todo.pop()
            for k, v in obj.items():
                if v is None:
                    continue
                path = prefix + k
                seen.setdefault(path, set()).add(types.get(type(v), "dict"))
                if isinstance(v, dict):
                    todo.append((path + ".", v))
                elif isinstance(v, list):
                    todo.extend((path + ".", item) for item in v if isinstance(item, dict))
        unknown = [p for p, t in seen.items() if "dict" not in t and not payload_types(p)]
        assert not unknown, f"{kind}: written but not in fields.py: {unknown}"
        wrong = {p: t for p, t in seen.items() if "dict" not in t and not t <= payload_types(p)}
        assert not wrong, wrong
        invented = [p for p, (t, _) in table.items() if t not in seen.get(p, ())]
        assert not invented, f"{kind}: listed in fields.py but never written so: {invented}"


def test_read_filters_ring_frames_from_a_capture(dp_capture):
    import json
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vuinspect",
            "read",
            "--rings",
            "--json",
            "-f",
            "kind == ring and payload.in_flight > 0",
            str(dp_capture),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["kind"], x["payload"]["in_flight"]) for x in rows] == [("ring", 4)] * 5 + [
        ("ring", 1)
    ]


def test_first_match_skips_what_the_filter_cannot_judge() -> None:
    from vuinspect.filter import first_match
    from vuinspect.message import Message

    note = Message(0, 1, 0, 1, "main", "f2b", kind="note")
    a = Message(1, 2, 0, 1, "main", "f2b", name="GET_FEATURES")
    b = Message(2, 3, 0, 1, "main", "f2b", name="SET_OWNER")

    def pred(m: Message) -> bool:
        if m.name == "GET_FEATURES":
            raise TypeError("cannot compare")
        return True

    assert first_match(pred, [note, a, b]) is note
    assert first_match(pred, [note, a, b], "message") is b
    assert first_match(lambda m: False, [a, b]) is None


def test_ts_is_the_ndjson_text_and_compares_exactly_to_the_nanosecond():
    """``ts`` is one thing: seconds.nanoseconds since the epoch, the NDJSON's "sec.nsec"
    text.  A filter compares it exactly (a double cannot tell 1764000000.000000001 from
    ...002), the literal as a word or as the quoted NDJSON text; ~ and matches see the text."""
    from vuinspect.filter import field_value
    from vuinspect.message import Message

    t0 = 1_764_000_000_000_000_000
    msgs = [Message(i, i, t0 + i, 1, "main", "f2b") for i in range(1, 4)]
    assert field_value(msgs[0], "ts") == msgs[0].to_dict()["ts"] == "1764000000.000000001"
    assert select(msgs, "ts == 1764000000.000000001") == msgs[:1]
    assert select(msgs, 'ts == "1764000000.000000002"') == msgs[1:2]  # pasted from NDJSON
    assert select(msgs, "ts >= 1764000000.000000002") == msgs[1:]
    assert select(msgs, "ts < 1764000000.000000003 and ts != 1764000000.000000001") == msgs[1:2]
    assert select(msgs, "ts > 1764000000") == msgs and select(msgs, "ts <= 1764000000") == []
    assert select(msgs, "ts > 1764000000.5") == []
    assert select(msgs, "ts ~ .000000003") == msgs[2:]
    assert select(msgs, 'ts matches "[.]00000000[12]$"') == msgs[:2]


@pytest.mark.parametrize(
    "expr",
    ["ts == 1.0000000001", "ts == 1e9", "ts == 0x10", "ts == soon", "ts == 1.2.3"],
)
def test_a_ts_literal_is_seconds_with_at_most_nine_decimals(expr):
    with pytest.raises(FilterError, match="seconds since the epoch"):
        compile_filter(expr)
