"""The pseudo-header: the byte table the team fixed, round trips, clear errors."""

from __future__ import annotations

import pytest
from capture_samples import pseudo
from hypothesis import given
from hypothesis import strategies as st

from vuinspect.capture import pseudohdr
from vuinspect.capture.pseudohdr import PseudoHeaderError, decode, encode
from vuinspect.frames import Frame


def test_constants_match_the_table():
    assert pseudohdr.MAGIC == b"VU" and pseudohdr.VERSION == 1 and pseudohdr.FIXED_LEN == 14
    assert pseudohdr.KIND_CODES == {
        "data": 0,
        "open": 1,
        "close": 2,
        "note": 3,
        "ring": 4,
        "notify": 5,
    }
    assert pseudohdr.CHANNEL_CODES == {"main": 0, "backend": 1}
    assert pseudohdr.DIRECTION_CODES == {"f2b": 0, "b2f": 1}
    assert pseudohdr.FLAG_BIG_ENDIAN == 1


def test_encode_matches_hand_built_bytes():
    frame = Frame(5, 0x01020304, "backend", "b2f", b"\xaa\xbb", ("eventfd", "memfd:x"), "data")
    want = pseudo(
        0x01020304,
        b"\xaa\xbb",
        kind=0,
        channel=1,
        direction=1,
        fds=(b"eventfd", b"memfd:x"),
        flags=1,
    )
    assert encode(frame, big_endian=True) == want
    assert want[4:6] == (14 + 2 + 7 + 2 + 7).to_bytes(2, "big")


def test_event_kinds_encode_their_code():
    for kind, code in pseudohdr.KIND_CODES.items():
        assert encode(Frame(0, 1, "main", "f2b", b"{}", (), kind))[3] == code


frames = st.builds(
    Frame,
    ts_ns=st.just(0),
    conn=st.integers(0, 2**32 - 1),
    channel=st.sampled_from(["main", "backend"]),
    direction=st.sampled_from(["f2b", "b2f"]),
    data=st.binary(max_size=300),
    fds=st.lists(st.text(max_size=40), max_size=20).map(tuple),
    kind=st.sampled_from(["data", "open", "close", "note", "ring", "notify"]),
)


@given(frames, st.booleans())
def test_round_trip(frame, big_endian):
    got, be = decode(encode(frame, big_endian))
    assert got == frame and be == big_endian


def test_decode_puts_the_given_timestamp():
    frame, _ = decode(pseudo(3, b"hi"), ts_ns=2**63 + 5)
    assert frame.ts_ns == 2**63 + 5 and frame.data == b"hi" and frame.conn == 3


def test_253_fds_fit_254_do_not():
    ok = Frame(0, 1, "main", "f2b", b"", tuple(f"fd{i}" for i in range(253)))
    assert decode(encode(ok))[0] == ok
    with pytest.raises(PseudoHeaderError, match="254 fds"):
        encode(Frame(0, 1, "main", "f2b", b"", tuple("x" for _ in range(254))))


def test_oversized_descriptions_are_shortened_to_fit_u16():
    long = "\u00e9" * 5000  # 10000 UTF-8 bytes each, 253 of them overflow hdr_len
    frame = Frame(0, 1, "main", "f2b", b"payload", (long,) * 253)
    got, _ = decode(encode(frame))
    assert got.data == b"payload" and len(got.fds) == 253
    assert all(
        fd.endswith("...") and fd.startswith("\u00e9") and "\ufffd" not in fd for fd in got.fds
    )
    assert int.from_bytes(encode(frame)[4:6], "big") <= 0xFFFF


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"VU\x01", "cut short: 3 of 14"),
        (b"XX" + pseudo(1, b"")[2:], "bad pseudo-header magic"),
        (pseudo(1, b"")[:2] + b"\x02" + pseudo(1, b"")[3:], "unsupported pseudo-header version 2"),
        (pseudo(1, b"", kind=6), "unknown frame kind 6"),
        (pseudo(1, b"", channel=2), "unknown channel 2"),
        (pseudo(1, b"", direction=9), "unknown direction 9"),
        (pseudo(1, b"")[:4] + b"\x00\x40" + pseudo(1, b"")[6:], "length 64 outside 14..14"),
        (pseudo(1, b"")[:4] + b"\x00\x0d" + pseudo(1, b"")[6:], "length 13 outside"),
        (pseudo(1, b"abcd")[:4] + b"\x00\x10" + pseudo(1, b"abcd")[6:], "but no fds"),
        (pseudo(1, b"", fds=(b"abc",))[:-1], "length 19 outside 14..18"),
        (
            pseudo(1, b"zz", fds=(b"abc",))[:13] + b"\x02" + pseudo(1, b"zz", fds=(b"abc",))[14:],
            "overruns pseudo-header length",
        ),
        (
            pseudo(1, b"", fds=(b"ab",))[:4] + b"\x00\x13" + pseudo(1, b"x", fds=(b"ab",))[6:],
            "fd list ends at 18, pseudo-header length says 19",
        ),
    ],
)
def test_decode_errors_say_why(buf, reason):
    with pytest.raises(PseudoHeaderError, match=reason) as info:
        decode(buf)
    assert info.value.reason == str(info.value)


def test_unknown_frame_fields_are_refused_on_encode():
    with pytest.raises(PseudoHeaderError, match="unknown kind/channel/direction 'sideways'"):
        encode(Frame(0, 1, "main", "sideways", b""))  # type: ignore[arg-type]
    with pytest.raises(PseudoHeaderError, match="32 bits"):
        encode(Frame(0, 2**32, "main", "f2b", b""))


def test_reserved_flag_bits_are_ignored_on_decode():
    frame, be = decode(pseudo(1, b"q", flags=0x80))
    assert frame.data == b"q" and be is False
