"""What a TUI row shows when it is re-decoded from its frame alone (tui/redecode.py).

The row is rebuilt with the decoder's stateless decode, the one the session runs;
these tests say what that decode gives, not that two copies agree.
"""

from __future__ import annotations

import struct

from vuinspect.encode import build
from vuinspect.frames import Frame
from vuinspect.payload import DecodeContext
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.requests import MAX_PAYLOAD
from vuinspect.render import to_json
from vuinspect.tui.model import Model
from vuinspect.tui.redecode import decode_frame, quick_decode
from vuinspect.tui.sources import FrameListSource

GET_CONFIG = 24
DATA = 5000 - 12  # a 5,000-byte payload: above MAX_PAYLOAD, as the proxy forwards it whole


def m(req: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return struct.pack("<III", req, flags, len(payload)) + payload


def oversize_frames() -> list[Frame]:
    big = build("main", GET_CONFIG, {"offset": 0, "size": DATA, "flags": 0, "data": "ab" * DATA})
    small = build("main", GET_CONFIG, {"offset": 0, "size": 4, "flags": 0, "data": "00" * 4})
    return [Frame(1_000, 1, "main", "f2b", big), Frame(2_000, 1, "main", "f2b", small)]


def test_a_frame_holding_one_oversize_message_is_decoded_whole() -> None:
    big = oversize_frames()[0]
    assert len(big.data) - 12 > MAX_PAYLOAD
    (msg,) = quick_decode(big, 1, DecodeContext())
    assert (msg.kind, msg.name, msg.layout, msg.size) == ("message", "GET_CONFIG", "config", 5000)
    assert msg.payload["size"] == DATA and msg.problem_codes == ["oversize"]
    # two of them in one frame: the framing above the protocol's limit is not trusted
    two = Frame(1_000, 1, "main", "f2b", big.data + big.data)
    msgs = quick_decode(two, 1, DecodeContext())
    assert msgs[0].kind == "raw" and "framing_lost" in msgs[0].problem_codes
    assert b"".join(x.raw for x in msgs) == two.data  # nothing dropped


def test_a_frame_of_several_messages_gives_each_fds_on_the_last() -> None:
    a = m(8, struct.pack("<II", 0, 256))  # SET_VRING_NUM
    b = m(12, struct.pack("<Q", 0))  # SET_VRING_KICK
    frame = Frame(5, 3, "main", "f2b", a + b, fds=("eventfd 7",))
    got = quick_decode(frame, 9, DecodeContext())
    assert [(x.name, x.fds, x.conn, x.frame) for x in got] == [
        ("SET_VRING_NUM", (), 3, 9),
        ("SET_VRING_KICK", ("kick: eventfd 7",), 3, 9),
    ]
    assert got[0].payload == {"index": 0, "num": 256}
    # the first part of a message split across frames: its header, flagged truncated
    (part,) = quick_decode(Frame(5, 3, "main", "f2b", a[:14]), 1, DecodeContext())
    assert part.name == "SET_VRING_NUM" and part.problem_codes[0] == "truncated_payload"


def test_the_decode_context_is_the_rows_not_a_guess() -> None:
    """A big-endian connection's frame decodes with the order its context says."""
    data = struct.pack(">III", 8, 1, 8) + struct.pack(">II", 1, 512)
    frame = Frame(1, 1, "main", "f2b", data)
    assert decode_frame(data, (), frame, 1, 1, DecodeContext(order=">")).payload == {
        "index": 1,
        "num": 512,
    }
    assert decode_frame(data, (), frame, 1, 1, DecodeContext()).kind == "raw"


def test_decoded_rows_of_an_oversize_message_match_the_pipeline() -> None:
    frames = oversize_frames()
    model = Model(FrameListSource(frames))
    model.run_to_end()
    got = [to_json(m) for r in range(len(frames)) for m in model.messages(r)]
    msgs = list(Pipeline().run(frames))  # all first: problems found at the end are added
    want = sorted((to_json(m) for m in msgs), key=lambda j: j["index"])
    assert got == want
