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
    assert [m.is_reply for m in got] == [False, True]


def test_old_names_match(messages):
    assert select(messages, "name == SET_SLAVE_REQ_FD") == \
        select(messages, "name == SET_BACKEND_REQ_FD")
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


@pytest.mark.parametrize("expr,pos", [
    ("nme == X", 0), ("name ==", 7), ("name == X and", 13), ("(name == X", 10),
    ("name === X", 7), ("payload.num > 3 )", 16), ('name matches "("', 13), ("size $ 3", 5),
])
def test_errors_point_at_the_problem(expr, pos):
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    assert info.value.position == pos, str(info.value)


def test_empty_filter_matches_everything(messages):
    assert select(messages, "  ") == messages
