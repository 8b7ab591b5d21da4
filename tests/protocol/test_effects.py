"""The session's rule table (protocol/effects.py) is what the session runs.

Every effect, check and virtio gate of the table is removed in turn: the session
state or the problems seen on a short real-shaped conversation must change, so no
entry is dead and the interpreter reads the table, not a hand-kept copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from vuinspect import rule_ops
from vuinspect import session as S
from vuinspect.dataplane import RingSample
from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame, ring_frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol import effects as EF
from vuinspect.protocol.features import PROTOCOL_BY_NAME, PROTOCOL_FEATURES_BIT
from vuinspect.protocol.requests import (
    BACKEND_REQUESTS,
    BY_CHANNEL,
    FRONTEND_REQUESTS,
    BackendRequest,
    FrontendRequest,
)

FE, BE = FrontendRequest, BackendRequest
CONN = 1
VIRTIO = 1 << 32 | 1 << PROTOCOL_FEATURES_BIT | 1 << 5  # VERSION_1, PROTOCOL_FEATURES, net MAC
NO_RARP = sum(1 << b.bit for b in PROTOCOL_BY_NAME.values() if b.bit <= 16) & ~(1 << 2)
REGION = {"guest_phys_addr": 0, "memory_size": 0x1000, "userspace_addr": 0x7F00, "mmap_offset": 0}


class Talk:
    """A conversation on one connection, built message by message."""

    def __init__(self, **info: Any) -> None:
        self.ns = 1_000_000
        self.frames: list[Frame] = [event_frame("open", self.tick(), CONN, {"label": "t", **info})]

    def tick(self) -> int:
        self.ns += 1000
        return self.ns

    def req(self, r: int, values: dict | None = None, fds: tuple = (), **kw: Any) -> Talk:
        data = build("main", r, values, **kw)
        self.frames.append(Frame(self.tick(), CONN, "main", "f2b", data, fds))
        return self

    def rep(self, r: int, values: dict | None = None, fds: tuple = ()) -> Talk:
        data = build("main", r, values, reply=True)
        self.frames.append(Frame(self.tick(), CONN, "main", "b2f", data, fds))
        return self

    def backend(self, r: int, values: dict | None = None, fds: tuple = ()) -> Talk:
        data = build("backend", r, values)
        self.frames.append(Frame(self.tick(), CONN, "backend", "b2f", data, fds))
        return self

    def ring(self, index: int, event: str) -> Talk:
        ts = self.tick()
        sample = RingSample(index, ts, "split", 256, avail_idx=0, used_idx=0)
        self.frames.append(ring_frame(ts, CONN, {**sample.to_json(), "event": event}))
        return self


def vring(index: int, **kw: int) -> dict[str, int]:
    return {"index": index, **kw}


def life() -> list[Frame]:
    """Negotiation, memory, rings, stops and resets: every front-end rule acts here."""
    t = Talk()
    t.req(FE.GET_FEATURES).rep(FE.GET_FEATURES, {"features": VIRTIO})
    t.req(FE.GET_PROTOCOL_FEATURES).rep(FE.GET_PROTOCOL_FEATURES, {"features": NO_RARP})
    t.req(FE.SET_PROTOCOL_FEATURES, {"features": NO_RARP | 1 << 2})  # not offered
    t.req(FE.SET_FEATURES, {"features": VIRTIO | 1 << 34})  # not offered
    t.req(FE.GET_QUEUE_NUM).rep(FE.GET_QUEUE_NUM, {"num_queues": 1})
    t.req(FE.GET_MAX_MEM_SLOTS).rep(FE.GET_MAX_MEM_SLOTS, {"slots": 2})
    t.req(FE.SET_OWNER)
    t.req(FE.SET_BACKEND_REQ_FD, fds=("socket:[7]",), need_reply=True)
    t.rep(FE.SET_BACKEND_REQ_FD, {"result": 0})
    t.req(FE.SET_MEM_TABLE, {"nregions": 1, "regions": [REGION]}, ("memfd:a",))
    region2 = dict(REGION, guest_phys_addr=0x1000)
    t.req(FE.ADD_MEM_REG, region2, ("memfd:b",))
    t.req(FE.ADD_MEM_REG, dict(REGION, guest_phys_addr=0x2000), ("memfd:c",))  # over 2 slots
    t.req(FE.REM_MEM_REG, region2, ("memfd:b",))
    t.req(FE.SET_MEM_TABLE, {"nregions": 9, "regions": [REGION] * 9}, ("memfd:d",) * 9)
    t.req(FE.SET_LOG_BASE, {"mmap_size": 64, "mmap_offset": 0}, ("memfd:log",))
    t.rep(FE.SET_LOG_BASE)  # LOG_SHMFD: always answered
    inflight = {"mmap_size": 64, "mmap_offset": 0, "num_queues": 1, "queue_size": 256}
    t.req(FE.SET_INFLIGHT_FD, inflight, ("memfd:inf",))
    t.req(FE.GET_INFLIGHT_FD, inflight).rep(FE.GET_INFLIGHT_FD, dict(inflight, mmap_size=128))
    t.req(FE.NET_SET_MTU, {"mtu": 9000})
    t.req(FE.SET_STATUS, {"status": 7}).req(FE.GET_STATUS).rep(FE.GET_STATUS, {"status": 15})
    config = {"offset": 0, "size": 4, "flags": 0, "data": "01020304"}
    t.req(FE.GET_CONFIG, config).rep(FE.GET_CONFIG, config)
    t.req(FE.SET_VRING_NUM, vring(0, num=256))
    t.req(FE.SET_VRING_ADDR, vring(0, flags=1, desc=0x10, used=0x20, avail=0x30, log=0x40))
    t.req(FE.SET_VRING_BASE, vring(0, num=5))
    t.req(FE.SET_VRING_ENDIAN, vring(1, num=1))
    t.req(FE.SET_VRING_KICK, {"value": 0}, ("eventfd:k",))
    t.req(FE.SET_VRING_CALL, {"value": 0x100})  # NOFD
    t.req(FE.SET_VRING_ERR, {"value": 0}, ("eventfd:e",))
    t.req(FE.SET_VRING_ENABLE, vring(0, num=1))
    t.req(FE.VRING_KICK, vring(1, num=0))
    t.ring(0, "start").ring(1, "start")
    t.req(FE.GET_VRING_BASE, vring(0)).rep(FE.GET_VRING_BASE, vring(0, num=7))
    t.req(FE.GET_VRING_BASE, vring(0)).rep(FE.GET_VRING_BASE, vring(0, num=7))  # stopped
    t.req(FE.GET_VRING_BASE_SKIP_DRAIN, vring(1)).rep(FE.GET_VRING_BASE_SKIP_DRAIN, vring(1))
    t.req(FE.GET_VRING_BASE_SKIP_DRAIN, vring(1)).rep(FE.GET_VRING_BASE_SKIP_DRAIN, vring(1))
    t.req(FE.SET_VRING_BASE, vring(0, num=1)).req(FE.SET_VRING_BASE, vring(1, num=1))
    t.req(FE.RESET_OWNER)
    t.req(FE.SET_VRING_BASE, vring(0, num=1)).req(FE.SET_VRING_BASE, vring(1, num=1))
    t.req(FE.SET_VRING_KICK, {"value": 1}, ("eventfd:k1",))
    t.req(FE.RESET_DEVICE)
    t.req(FE.SET_FEATURES, {"features": 1 << 32})  # no PROTOCOL_FEATURES: rings enabled
    for r in (FE.SET_VRING_NUM, FE.SET_VRING_BASE, FE.SET_VRING_ENABLE, FE.SET_VRING_ENDIAN):
        t.req(r, vring(5, num=1))  # beyond 2 x 1 queues
    t.req(FE.SET_VRING_ADDR, vring(5, flags=0, desc=0, used=0, avail=0, log=0))
    for r in (FE.GET_VRING_BASE, FE.GET_VRING_BASE_SKIP_DRAIN):
        t.req(r, vring(5)).rep(r, vring(5, num=0))
    t.req(FE.VRING_KICK, vring(5))
    for r in (FE.SET_VRING_KICK, FE.SET_VRING_CALL, FE.SET_VRING_ERR):
        t.req(r, {"value": 5}, ("eventfd:x",))
    return t.frames


def no_protocol_features() -> list[Frame]:
    """A back-end without VHOST_USER_F_PROTOCOL_FEATURES; the front-end asks anyway."""
    t = Talk()
    t.req(FE.GET_FEATURES).rep(FE.GET_FEATURES, {"features": 1 << 32})
    t.req(FE.GET_PROTOCOL_FEATURES).rep(FE.GET_PROTOCOL_FEATURES, {"features": 0})
    t.req(FE.SET_PROTOCOL_FEATURES, {"features": 0})
    t.req(FE.SET_VRING_ENABLE, vring(0, num=1))
    return t.frames


def backend_request(r: BackendRequest) -> list[Frame]:
    t = Talk(device="blk")
    t.req(FE.SET_BACKEND_REQ_FD, fds=("socket:[7]",))
    spec = BY_CHANNEL["backend"][r]
    values = {"uuid": "00" * 16} if spec.request[0].name == "shared" else {}
    t.backend(r, values, ("memfd:shm",) if spec.fds[0] else ())
    return t.frames


SCENARIOS = {
    "life": life,
    "no_protocol_features": no_protocol_features,
    **{f"backend_{r.name}": (lambda r=r: backend_request(r)) for r in BackendRequest},
}

_STATE = EF.session_fields()


def seen(frames: list[Frame]) -> list[tuple]:
    """Per message: its problems and the session state after it (what the faces show)."""
    p = Pipeline()
    out = []
    for frame in frames:
        for msg in p.feed(frame):
            s = p.sessions[CONN]
            state = {k: getattr(s, k) for k in _STATE}
            state["regions"] = [g.to_json() for g in s.regions]
            state["vrings"] = {i: v.to_json() for i, v in sorted(s.vrings.items())}
            state["rings"] = {
                i: (t.pending_reset, t.to_json()) for i, t in sorted(s.dataplane.rings.items())
            }
            out.append((msg.name, [(x.code, x.text) for x in msg.problems], repr(state)))
    return out


def mutations() -> Iterator[tuple[str, str, int, EF.Rule]]:
    """(id, channel, request, the request's rule with one entry taken away)."""
    for channel, rules in EF.RULES.items():
        for rid, rule in sorted(rules.items()):
            name = BY_CHANNEL[channel][rid].name
            for side in ("request", "reply"):
                effects = getattr(rule, side)
                for i, e in enumerate(effects):
                    less = effects[:i] + effects[i + 1 :]
                    yield (
                        f"{name}-{side}-{e.op}-{e.field or e.value}",
                        channel,
                        rid,
                        dataclasses.replace(rule, **{side: less}),
                    )
            for i, c in enumerate(rule.checks):
                less_checks = rule.checks[:i] + rule.checks[i + 1 :]
                yield (
                    f"{name}-check-{c.kind}",
                    channel,
                    rid,
                    dataclasses.replace(rule, checks=less_checks),
                )
            if rule.virtio != "acked":
                yield f"{name}-virtio", channel, rid, dataclasses.replace(rule, virtio="acked")
            if rule.virtio_problem:
                yield f"{name}-vproblem", channel, rid, dataclasses.replace(rule, virtio_problem="")


MUTATIONS = list(mutations())


@pytest.fixture(scope="module")
def baseline() -> dict[str, list[tuple]]:
    return {name: seen(make()) for name, make in SCENARIOS.items()}


@pytest.mark.parametrize(
    ("channel", "rid", "less"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_every_table_entry_changes_what_the_session_shows(
    monkeypatch, baseline, channel, rid, less
):
    monkeypatch.setitem(EF.RULES[channel], rid, less)
    changed = [name for name, make in SCENARIOS.items() if seen(make()) != baseline[name]]
    assert changed, "the session ignored this entry of protocol/effects.py"


def test_the_scenarios_are_clean_where_they_mean_to_be(baseline):
    """The conversations raise the problems they aim at, not decode errors."""
    codes = {code for name in baseline for _, probs, _ in baseline[name] for code, _ in probs}
    assert {
        "features_not_offered",
        "too_many_regions",
        "vring_not_started",
        "vring_out_of_range",
        "enable_without_protocol_features",
        "feature_not_negotiated",
    } <= codes
    waits = {"unknown_request", "reply_mismatch", "request_while_waiting", "missing_reply"}
    assert not codes & waits
    decode = {"wrong_size", "bad_count", "fd_count"}  # only the 9-region SET_MEM_TABLE's
    assert {
        name for s in baseline.values() for name, probs, _ in s if decode & {c for c, _ in probs}
    } == {"SET_MEM_TABLE"}


def test_the_interpreter_knows_every_op_and_check():
    assert set(rule_ops.OPS) | set(rule_ops.VRING_OPS) == set(EF.OPS)
    assert set(rule_ops.CHECKS) == set(EF.CHECKS)


def test_the_table_names_requests_that_exist():
    for channel, rules in EF.RULES.items():
        assert set(rules) <= set(BY_CHANNEL[channel]), channel
        for rule in rules.values():
            for e in (*rule.request, *rule.reply):
                if e.op.startswith("vring"):  # vring, vring_*, vrings_all
                    assert e.field in S.Vring.__slots__ or e.op == "vring", e
                elif e.field:
                    assert hasattr(S.Session(0), e.field), e


def test_session_fields_are_the_state_the_table_writes():
    fields = EF.session_fields()
    assert len(set(fields)) == len(fields)
    assert all(hasattr(S.Session(0), name) for name in fields)
    assert {"device", "virtio_acked", "protocol_offered", "backend_fd", "inflight"} <= set(fields)
    assert "started" not in fields and "regions" not in fields  # a vring's; not a field op's


def test_request_enums_are_the_request_tables():
    assert {m.name: m.value for m in FrontendRequest} == {s.name: s.id for s in FRONTEND_REQUESTS}
    assert {m.name: m.value for m in BackendRequest} == {s.name: s.id for s in BACKEND_REQUESTS}


def test_an_unknown_op_is_refused():
    with pytest.raises(ValueError):
        EF.Effect("teleport")
    with pytest.raises(ValueError):
        EF.Check("vibes")


def test_added_regions_are_bounded_without_a_slot_count():
    """ADD_MEM_REG with no GET_MAX_MEM_SLOTS answered: the memory table stops at the data
    plane's MAX_REGIONS (a flooding front-end must not grow it, nor REM_MEM_REG's scan)."""
    from vuinspect.dataplane.memory import MAX_REGIONS

    t = Talk()
    for i in range(MAX_REGIONS + 20):
        t.req(FE.ADD_MEM_REG, dict(REGION, guest_phys_addr=i << 12), ("memfd:r",))
    p = Pipeline()
    for frame in t.frames:
        p.feed(frame)
    regions = p.sessions[CONN].regions
    assert len(regions) == MAX_REGIONS
    last = p.feed(Frame(t.tick(), CONN, "main", "f2b", build("main", FE.ADD_MEM_REG, REGION)))
    assert [x.code for x in last[0].problems].count("too_many_regions") == 1
    assert regions[-1].guest_phys_addr == (MAX_REGIONS - 1) << 12
