"""decode_message alone is the stateless half of Session.handle (what the TUI's re-decode
of a painted row relies on, vuinspect/tui/redecode.py).

For every message, ``decode_message(raw, ..., session.context())`` taken just before
``handle(raw)`` gives the same fields; its problems are the stateless ones, in the order
handle reports them (the header's, pairing's in between, then the payload's and the
state's); only pairing (reply_to, reply_in, latency) and the state's problems are the
session's.  Also: pairing's problems come between the header's and the payload's (as the
Lua dissector reports them) and the state keeps fds as they came.
"""

from __future__ import annotations

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
from vuinspect.samples import device_start, every_message
from vuinspect.session import Session
from vuinspect.testing import wire

CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))
#: what only the session knows
SESSION_KEYS = ("problems", "severity", "reply_to", "reply_in", "latency_us")


class Twin(Session):
    """A session that also decodes each message alone, with its context of the moment."""

    twins: list[tuple[dict[str, Any], Message, Message]]

    def handle(
        self, raw: RawMessage, index: int, direction: Direction, channel: Channel
    ) -> Message:
        alone = decode_message(raw, channel, direction, self.context(), conn=self.conn, index=index)
        msg = super().handle(raw, index, direction, channel)
        Twin.twins.append((msg.to_dict(), msg, alone))  # (reply_in changes later)
        return msg


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(code in it for code in part)


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
def test_decode_message_alone_is_what_handle_decodes(monkeypatch, frames: list[Frame]) -> None:
    monkeypatch.setattr(pipeline_module, "Session", Twin)
    monkeypatch.setattr(Twin, "twins", [], raising=False)
    list(Pipeline().run(frames))
    assert Twin.twins
    for whole, msg, alone in Twin.twins:
        solo = alone.to_dict()
        for key in SESSION_KEYS:
            whole.pop(key), solo.pop(key)
        assert solo == whole, msg.frame
        assert is_subsequence(alone.problem_codes, msg.problem_codes), msg.frame


def raw(request: int, flags: int, payload: bytes, frame: int, fds: tuple = ()) -> RawMessage:
    data = wire.pack(request, flags, payload)
    return RawMessage(data, fds, 1000 * frame, frame, *parse_header(data))


def test_pairing_problems_come_between_the_header_and_the_payload() -> None:
    # a reply nobody waits for, with a payload too short: reply_to_nothing, then wrong_size
    orphan = raw(wire.GET_FEATURES, wire.REPLY_FLAGS | 0x80, b"\x01\x02", 1)
    alone = decode_message(orphan, "main", "b2f", Session(1).context(), conn=1)
    msg = Session(1).handle(orphan, 0, "b2f", "main")
    assert msg.problem_codes == ["reserved_flags", "reply_flags", "reply_to_nothing", "wrong_size"]
    assert alone.problem_codes == ["reserved_flags", "reply_flags", "wrong_size"]


def test_the_state_keeps_fds_as_they_came_and_the_message_names_them() -> None:
    kick = raw(wire.SET_VRING_KICK, wire.FLAG_VERSION, struct.pack("<Q", 0), 1, ("eventfd 7",))
    session = Session(1)
    msg = session.handle(kick, 0, "f2b", "main")
    assert msg.fds == ("kick: eventfd 7",)
    assert session.vrings[0].kick == "eventfd 7"
