"""The rule language: what parses, and errors that name the position (docs/rules.md)."""

from __future__ import annotations

import struct

import pytest

from vuinspect.rules import ConnRules, RuleError, RuleSet, feature_bit, parse_rule, parse_rules
from vuinspect.testing import wire


def test_actions_parse():
    r = parse_rule("delay 2s: name == GET_VRING_BASE")
    assert (r.action, r.delay_s, r.names) == ("delay", 2.0, frozenset({("main", 11)}))
    assert parse_rule("delay 250ms once: name == GET_FEATURES").delay_s == 0.25
    r = parse_rule("drop count=3: name == SET_VRING_CALL and payload.index == 1")
    assert (r.action, r.limit, r.filter_text) == (
        "drop",
        3,
        "name == SET_VRING_CALL and payload.index == 1",
    )
    r = parse_rule("mask-features VIRTIO_RING_F_EVENT_IDX VHOST_USER_PROTOCOL_F_REPLY_ACK")
    assert r.virtio_mask == 1 << 29 and r.protocol_mask == 1 << 3 and r.match is None
    r = parse_rule("corrupt 0=0xff 4^=1: name == SET_VRING_NUM")
    assert r.edits == [(0, "=", 255), (4, "^=", 1)]
    assert parse_rule("disconnect once: name == SET_VRING_ENABLE").limit == 1
    assert parse_rule("reply-error: name == GET_CONFIG").action == "reply-error"


def test_name_bound_only_when_it_binds():
    """Only a top-level 'and' term bounds the requests decoded; 'or' and 'not' lose it."""
    assert parse_rule("drop: payload.index == 1 and name == SET_VRING_CALL").names == frozenset(
        {("main", 13)}
    )
    assert parse_rule("drop: name == SET_VRING_CALL or name == SET_VRING_KICK").names is None
    assert parse_rule("drop: not name == SET_VRING_CALL").names is None
    assert parse_rule("drop: (name == GET_FEATURES)").names is None
    assert parse_rule("drop: channel == backend").names is None


@pytest.mark.parametrize(
    "text, message, position",
    [
        ("dely 2s: name == GET_FEATURES", "unknown action 'dely'; did you mean delay?", 1),
        ("delay: name == GET_FEATURES", "delay needs a duration", 6),
        ("delay 2 parsecs: name == GET_FEATURES", "delay takes no argument 'parsecs'", 9),
        ("delay 2x: name == GET_FEATURES", "not a duration: '2x'", 7),
        ("drop", "drop needs ': FILTER'", 5),
        ("drop:   ", "expected a filter after ':'", 9),
        ("drop: nme == GET_FEATURES", "unknown field 'nme'; did you mean name?", 7),
        ("drop: name == GET_FEATURES and", "expression ends too early", 31),
        ("drop count=0: name == GET_FEATURES", "count needs a number", 6),
        ("corrupt 5: name == GET_FEATURES", "expected OFFSET=BYTE", 9),
        ("corrupt 0=256: name == GET_FEATURES", "offset below 1048576 and byte 0-255", 9),
        ("mask-features MQ", "'MQ' is ambiguous: say VHOST_USER_PROTOCOL_F_MQ", 15),
        ("mask-features RING_EVENT_IDXX", "unknown feature 'RING_EVENT_IDXX'", 15),
        ("", "empty rule", 1),
    ],
)
def test_errors_name_the_position(text, message, position):
    with pytest.raises(RuleError) as err:
        parse_rule(text, "--rule 1")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("--rule 1: " + message), line
    assert line.endswith(f"(at character {position})"), line


def test_file_errors_name_file_and_line(tmp_path):
    f = tmp_path / "r.rules"
    f.write_text("# comment\n\ndelay 1s: name == GET_FEATURES\ndrop: name === X\n")
    with pytest.raises(RuleError) as err:
        parse_rules([], [str(f)])
    assert str(err.value).startswith(f"{f}:4: ")
    f.write_text("# comment\ndelay 1s: name == GET_FEATURES\n")
    assert [r.action for r in parse_rules(["drop: name == SET_OWNER"], [str(f)])] == [
        "drop",
        "delay",
    ]


def test_feature_names():
    assert feature_bit("VIRTIO_RING_F_EVENT_IDX") == ("virtio", 29)
    assert feature_bit("RING_EVENT_IDX") == ("virtio", 29)
    assert feature_bit("VIRTIO_F_VERSION_1") == ("virtio", 32)
    assert feature_bit("VIRTIO_BLK_F_FLUSH") == ("virtio", 9)
    assert feature_bit("VHOST_USER_PROTOCOL_F_CONFIG") == ("protocol", 9)
    assert feature_bit("REPLY_ACK") == ("protocol", 3)
    assert feature_bit("BIT_40") == ("virtio", 40)


# -- the matcher, without sockets ------------------------------------------------------------


def _judge(rules, msgs):
    cr = ConnRules(RuleSet([parse_rule(t) for t in rules]), 1, lambda fd: "eventfd")
    return [cr.judge(0, ch, d, data, []) for ch, d, data in msgs]


def test_matcher_decodes_and_limits():
    call0 = wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(0))
    call1 = wire.pack(wire.SET_VRING_CALL, wire.FLAG_VERSION, wire.U64.pack(1))
    out = _judge(
        ["drop once: name == SET_VRING_CALL and payload.index == 1"],
        [("main", "f2b", call0), ("main", "f2b", call1), ("main", "f2b", call1)],
    )
    assert out[0] is None and out[2] is None  # no match; then the limit is used up
    assert out[1].data is None and out[1].notes[0]["original"] == call1.hex()
    assert out[1].notes[0]["new"] == "" and out[1].notes[0]["action"] == "drop"


def test_mask_features_both_ways():
    offer = wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, wire.U64.pack((1 << 29) | (1 << 32)))
    ack = wire.pack(wire.SET_FEATURES, wire.FLAG_VERSION, wire.U64.pack((1 << 29) | 1))
    ask = wire.pack(wire.GET_FEATURES)
    got = _judge(
        ["mask-features VIRTIO_RING_F_EVENT_IDX"],
        [("main", "b2f", offer), ("main", "f2b", ack), ("main", "f2b", ask)],
    )
    assert wire.U64.unpack_from(got[0].data, 12)[0] == 1 << 32
    assert wire.U64.unpack_from(got[1].data, 12)[0] == 1
    assert got[2] is None


def test_reply_error_answers_only_what_the_spec_allows():
    cfg = wire.pack(wire.GET_CONFIG, wire.FLAG_VERSION, struct.pack("=III", 0, 4, 0) + bytes(4))
    got = _judge(
        [
            "reply-error: name == GET_CONFIG",
            "reply-error: name == GET_FEATURES",
            "reply-error: name == SET_VRING_NUM",
        ],
        [
            ("main", "f2b", cfg),
            ("main", "f2b", wire.pack(wire.GET_FEATURES)),
            ("main", "f2b", wire.pack(wire.SET_VRING_NUM, 0x9, struct.pack("=II", 0, 8))),
        ],
    )
    assert got[0].data is None and got[0].reply == wire.pack(wire.GET_CONFIG, wire.REPLY_FLAGS)
    assert got[1].data is not None and got[1].reply is None  # GET_FEATURES cannot fail
    assert got[1].notes[0]["fired"] is False
    assert got[2].reply == wire.pack(wire.SET_VRING_NUM, wire.REPLY_FLAGS, wire.U64.pack(1))


def test_corrupt_and_delay_stack():
    num = wire.pack(wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 0, 256))
    got = _judge(
        ["corrupt 0^=0x01 4=0x10: name == SET_VRING_NUM", "delay 10ms: name == SET_VRING_NUM"],
        [("main", "f2b", num)],
    )[0]
    assert got.data == wire.pack(
        wire.SET_VRING_NUM, wire.FLAG_VERSION, struct.pack("=II", 1, 0x110)
    )
    assert got.delay_s == 0.01 and [n["action"] for n in got.notes] == ["corrupt", "delay"]


def test_proxy_refuses_a_bad_rule_at_start(tmp_path):
    """One line naming the rule and the character; nothing is listened on."""
    from vuinspect.testing.procs import proxy_options, run_proxy

    listen, be = tmp_path / "px.sock", str(tmp_path / "be.sock")
    bad = tmp_path / "bad.rules"
    bad.write_text("delay 1s: name == GET_FEATURES\nmask-features EVENT_IDXX\n")
    for extra in (
        ["--rule", "delay 2s: name == GET_VRING_BASE", "--rule", "drop: nme == X"],
        ["--rules", str(bad)],
    ):
        p = run_proxy(*proxy_options(str(listen), be, *extra, quiet=False))
        assert p.returncode != 0
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert lines[0].endswith(
            "(at character 7)" if extra[0] == "--rule" else "(at character 15)"
        ), lines
        assert ("--rule 2:" if extra[0] == "--rule" else f"{bad}:2:") in lines[0]
        assert not listen.exists()
    missing = ("--rules", str(tmp_path / "missing.rules"))
    p = run_proxy(*proxy_options(str(listen), be, *missing, quiet=False))
    assert p.returncode != 0 and "missing.rules: No such file" in p.stderr
