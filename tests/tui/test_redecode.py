"""Rows re-decoded from their frame alone agree with the pipeline (tui/redecode.py)."""

from __future__ import annotations

from vuinspect.encode import build
from vuinspect.frames import Frame
from vuinspect.payload import DecodeContext
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.requests import MAX_PAYLOAD
from vuinspect.render import to_json
from vuinspect.tui.model import Model
from vuinspect.tui.redecode import quick_decode, split_frame
from vuinspect.tui.sources import FrameListSource

GET_CONFIG = 24
DATA = 5000 - 12  # a 5,000-byte payload: above MAX_PAYLOAD, as the proxy forwards it whole


def oversize_frames() -> list[Frame]:
    big = build("main", GET_CONFIG, {"offset": 0, "size": DATA, "flags": 0, "data": "ab" * DATA})
    small = build("main", GET_CONFIG, {"offset": 0, "size": 4, "flags": 0, "data": "00" * 4})
    return [Frame(1_000, 1, "main", "f2b", big), Frame(2_000, 1, "main", "f2b", small)]


def test_a_frame_holding_one_oversize_message_is_that_message() -> None:
    big = oversize_frames()[0]
    assert len(big.data) - 12 > MAX_PAYLOAD
    assert split_frame(big.data) == [big.data]
    assert split_frame(big.data + big.data) is None  # two of them: the framing is not trusted
    (msg,) = quick_decode(big, 1, DecodeContext())
    pipe = next(iter(Pipeline().run([big])))
    assert pipe.name == "GET_CONFIG" and "oversize" in pipe.problem_codes
    assert (msg.kind, msg.name, msg.layout, msg.size) == (
        pipe.kind,
        pipe.name,
        pipe.layout,
        pipe.size,
    )
    assert msg.payload == pipe.payload and msg.payload["size"] == DATA


def test_decoded_rows_of_an_oversize_message_match_the_pipeline() -> None:
    frames = oversize_frames()
    model = Model(FrameListSource(frames))
    model.run_to_end()
    got = [to_json(m) for r in range(len(frames)) for m in model.messages(r)]
    msgs = list(Pipeline().run(frames))  # all first: problems found at the end are added
    want = sorted((to_json(m) for m in msgs), key=lambda j: j["index"])
    assert got == want
