"""Session.observe: the stateful half of Session.handle, on a message decode_message made alone.

``handle(raw)`` must equal ``observe(decode_message(raw, ..., session.context()))``
on every message: the same fields, the same problems in the same order (pairing's
between the header's and the payload's, as the Lua dissector reports them), the
same session state (fds kept as they came, not as decode_message names them).
"""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from vuinspect import pipeline as pipeline_module
from vuinspect.capture import read_frames
from vuinspect.decoder import RawMessage, decode_message, parse_header
from vuinspect.frames import Channel, Direction, Frame
from vuinspect.fuzz.mutate import mutate_frames
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.effects import session_fields
from vuinspect.samples import device_start, every_message
from vuinspect.session import Session
from vuinspect.testing import wire

CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))
STATE = (
    *session_fields(),
    "seen_start",
    "messages",
    "problem_count",
    "first_ns",
    "last_ns",
)


class Observed(Session):
    """A session whose handle is the two halves: decode_message, then observe."""

    def handle(
        self, raw: RawMessage, index: int, direction: Direction, channel: Channel
    ) -> Message:
        msg = decode_message(raw, channel, direction, self.context(), conn=self.conn, index=index)
        return self.observe(msg)


def run(frames: list[Frame]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every message's NDJSON object, and every session's state at the end."""
    p = Pipeline()
    msgs = [m.to_dict() for m in p.run(frames)]
    states = [
        repr(
            (
                {k: getattr(s, k) for k in STATE},
                s.regions,
                sorted(s.vrings.items()),
                sorted((k, v.count, v.replies, v.problem_count) for k, v in s.stats.items()),
                s.waiting(),
                s.dataplane.rings,
            )
        )
        for _, s in sorted(p.sessions.items())
    ]
    return msgs, states


def corpus() -> list[tuple[str, list[Frame]]]:
    """The captures and samples, and mutated copies of them (every problem kind, in order)."""
    base = [(p.name, list(read_frames(p))) for p in CAPTURES]
    base += [("device_start", device_start()), ("every_message", every_message())]
    rng = random.Random(16)
    mutated = [
        (f"{name}~{k}", mutate_frames(frames, rng)) for k in range(40) for name, frames in base
    ]
    return base + mutated


CORPUS = corpus()


@pytest.mark.parametrize("frames", [c[1] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_handle_is_decode_message_then_observe(monkeypatch, frames: list[Frame]) -> None:
    whole = run(frames)
    monkeypatch.setattr(pipeline_module, "Session", Observed)
    halves = run(frames)
    assert halves[0] == whole[0]  # every message, field by field, problems in order
    assert halves[1] == whole[1]  # the sessions' state


def raw(request: int, flags: int, payload: bytes, frame: int, fds: tuple = ()) -> RawMessage:
    data = wire.pack(request, flags, payload)
    return RawMessage(data, fds, 1000 * frame, frame, *parse_header(data))


def both(
    raws: list[tuple[RawMessage, Direction]],
) -> tuple[list[Message], list[Message], Session]:
    """(handle's messages, decode_message + observe's messages, observe's session)."""
    a, b = Session(1), Session(1)
    handled = [a.handle(r, i, d, "main") for i, (r, d) in enumerate(raws)]
    observed = []
    for i, (r, d) in enumerate(raws):
        r = dataclasses.replace(r, problems=list(r.problems))
        msg = decode_message(r, "main", d, b.context(), conn=1, index=i)
        observed.append(b.observe(msg))
    assert b.vrings == a.vrings and b.regions == a.regions
    return handled, observed, b


def test_pairing_problems_come_between_the_header_and_the_payload() -> None:
    # a reply nobody waits for, with a payload too short: reply_to_nothing, then wrong_size
    orphan = raw(wire.GET_FEATURES, wire.REPLY_FLAGS | 0x80, b"\x01\x02", 1)
    handled, observed, _ = both([(orphan, "b2f")])
    want = ["reserved_flags", "reply_flags", "reply_to_nothing", "wrong_size"]
    assert [p.code for p in handled[0].problems] == want
    assert [p.code for p in observed[0].problems] == want


def test_the_state_keeps_fds_as_they_came_and_the_message_names_them() -> None:
    kick = raw(wire.SET_VRING_KICK, wire.FLAG_VERSION, struct.pack("<Q", 0), 1, ("eventfd 7",))
    handled, observed, session = both([(kick, "f2b")])
    assert handled[0].fds == observed[0].fds == ("kick: eventfd 7",)
    assert session.vrings[0].kick == "eventfd 7"
