"""rule_steps: the rule table resolved once per request, shared, and renewed when it changes.

What each entry does is tests/protocol/test_effects.py (every entry taken away in turn
changes what the session shows); here: the resolution is done once and follows the table.
"""

from __future__ import annotations

import dataclasses

from vuinspect import rule_ops, rule_steps
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol import effects as EF
from vuinspect.protocol.requests import BY_CHANNEL, FrontendRequest
from vuinspect.samples import device_start
from vuinspect.session import Session

SET_VRING_NUM = BY_CHANNEL["main"][FrontendRequest.SET_VRING_NUM]


def test_a_request_is_resolved_once_and_shared_by_the_sessions() -> None:
    table = rule_steps.table()
    assert rule_steps.table() is table
    assert Session(1)._steps is table and Session(2)._steps is table
    steps = table.get(SET_VRING_NUM)
    assert table.get(SET_VRING_NUM) is steps
    assert steps.rule is EF.rule("main", FrontendRequest.SET_VRING_NUM)
    p = Pipeline()
    list(p.run(device_start()))
    assert p.sessions[1]._steps is table
    assert p.sessions[1].vrings and all(ring.num for ring in p.sessions[1].vrings.values())
    assert table.resolved[id(SET_VRING_NUM)] is steps  # the run used the same, no rebuild


def test_a_changed_table_entry_gets_new_steps(monkeypatch) -> None:
    old = rule_steps.table()
    rule = EF.RULES["main"][FrontendRequest.SET_VRING_NUM]
    monkeypatch.setitem(
        EF.RULES["main"], FrontendRequest.SET_VRING_NUM, dataclasses.replace(rule, request=())
    )
    new = rule_steps.table()
    assert new is not old and new.get(SET_VRING_NUM).rule.request == ()
    p = Pipeline()
    list(p.run(device_start()))
    assert all(ring.num is None for ring in p.sessions[1].vrings.values())  # nothing set it
    monkeypatch.undo()
    again = rule_steps.table()
    assert again is not new and again.get(SET_VRING_NUM).rule is rule


def test_the_fd_check_is_skipped_only_where_it_finds_nothing_without_fds() -> None:
    """A message without fds skips rule_ops.check_fds unless its spec may require one."""
    s = Session(1)
    for channel, specs in BY_CHANNEL.items():
        for spec in specs.values():
            for reply, allowed, layouts in (
                (False, spec.fds, spec.request),
                (True, spec.reply_fds, spec.reply),
            ):
                if rule_ops.fds_required(allowed, layouts):
                    continue
                for layout in (None, *(x.name for x in layouts)):
                    for payload in ({}, {"nofd": 0}, {"nofd": 1}, {"regions": []}):
                        msg = Message(0, 1, 1, 1, channel, "f2b", reply=reply, layout=layout)
                        msg.payload = dict(payload)
                        rule_ops.check_fds(s, msg, allowed, "role")
                        assert msg.problems == [], (spec.name, reply, layout, payload)


def test_the_fd_check_accepts_exactly_the_expected_fds() -> None:
    """check_fds finds fd_count outside rule_ops.expected_fds and nowhere inside it (the
    samples send as many as it says; one reading of layout and payload for both)."""
    s = Session(1)
    s.protocol_acked = -1  # every feature: only the count is judged
    for channel, specs in BY_CHANNEL.items():
        for spec in specs.values():
            for reply, allowed, layouts in (
                (False, spec.fds, spec.request),
                (True, spec.reply_fds, spec.reply),
            ):
                for layout in (None, *(x.name for x in layouts)):
                    for payload in ({}, {"nofd": 0}, {"nofd": 1}, {"regions": [{}] * 3}):
                        lo, hi = rule_ops.expected_fds(allowed, layout, payload)
                        assert 0 <= lo <= hi
                        for n in range(max(hi + 2, 10)):
                            msg = Message(0, 1, 1, 1, channel, "f2b", reply=reply, layout=layout)
                            msg.payload, msg.fds = dict(payload), ("memfd",) * n
                            rule_ops.check_fds(s, msg, allowed, "")
                            bad = [p for p in msg.problems if p.code == "fd_count"]
                            assert bool(bad) == (not lo <= n <= hi), (spec.name, layout, n)
