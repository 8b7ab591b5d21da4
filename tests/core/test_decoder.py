"""The stateless decode (decoder.decode_message): what a message says on its own.

The session runs the same steps with pairing and the stateful checks in between;
the TUI re-decodes painted rows with it.
"""

from __future__ import annotations

import struct

from vuinspect.decoder import RawMessage, check_header, decode_message, read_header
from vuinspect.frames import Frame
from vuinspect.message import Message
from vuinspect.payload import DecodeContext
from vuinspect.pipeline import Pipeline


def m(req: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return struct.pack("<III", req, flags, len(payload)) + payload


def test_decoding_alone_reports_what_needs_no_state_and_nothing_else() -> None:
    """Header problems are stateless; a reply that nothing waits for is the session's."""
    reply = RawMessage(m(1, struct.pack("<Q", 1 << 32), flags=0x5 | 0x40), (), 7, 2, 1, 0x45, 8)
    msg = decode_message(reply, "main", "b2f", DecodeContext(), conn=4, index=3)
    assert (msg.name, msg.reply, msg.layout, msg.conn, msg.index) == (
        "GET_FEATURES",
        True,
        "virtio_features",
        4,
        3,
    )
    assert msg.problem_codes == ["reserved_flags", "reply_flags"]
    (piped,) = Pipeline().run([Frame(7, 4, "main", "b2f", reply.data)])
    assert piped.problem_codes == ["reserved_flags", "reply_flags", "reply_to_nothing"]


def test_raw_bytes_and_unknown_requests_decode_alone() -> None:
    junk = RawMessage(b"\x01\x02", ("memfd 3",), 1, 1, raw=True)
    msg = decode_message(junk, "main", "f2b", DecodeContext())
    assert (msg.kind, msg.name, msg.size, msg.fds) == ("raw", "RAW", 2, ("memfd 3",))
    data = m(999, b"\xab\xcd")
    unknown = RawMessage(data, (), 1, 1, 999, 1, 2)
    msg = decode_message(unknown, "backend", "b2f", DecodeContext())
    assert (msg.name, msg.reply, msg.payload) == ("BACKEND_UNKNOWN_999", False, {"data": "abcd"})
    assert msg.problem_codes == ["unknown_request"]


def test_a_shared_cache_gives_the_same_decode() -> None:
    raw = RawMessage(m(8, struct.pack("<II", 1, 256)), (), 1, 1, 8, 1, 8)
    cache: dict[tuple, tuple] = {}
    first = decode_message(raw, "main", "f2b", DecodeContext(), cache=cache)
    again = decode_message(raw, "main", "f2b", DecodeContext(), cache=cache)
    assert len(cache) == 1 and first.payload == again.payload == {"index": 1, "num": 256}
    # another context (here another device) is another entry: layouts may depend on it
    decode_message(raw, "main", "f2b", DecodeContext(device="net"), cache=cache)
    assert len(cache) == 2


def test_the_header_checks_run_on_every_flags_value_that_has_something_to_report() -> None:
    """read_header skips check_header on the usual flags: only where it finds nothing."""
    for channel, requester in (("main", "f2b"), ("backend", "b2f")):
        for direction in ("f2b", "b2f"):
            for flags in range(0x40):
                raw = RawMessage(m(1, flags=flags), (), 1, 1, 1, flags, 0)
                msg, _ = read_header(raw, channel, direction)
                alone = Message(0, 1, 1, 0, channel, direction, request=1, flags=flags)
                alone.reply = direction != requester
                check_header(alone)
                assert msg.problem_codes == alone.problem_codes, (channel, direction, flags)
