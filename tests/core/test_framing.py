"""Framing: split messages, several per read, byte at a time, fds on the right message."""

from __future__ import annotations

import struct

from vuinspect.decoder import StreamFramer
from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline


def m(req: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return struct.pack("<III", req, flags, len(payload)) + payload


A = m(8, struct.pack("<II", 0, 256))
B = m(12, struct.pack("<Q", 0))
C = m(5, struct.pack("<II", 1, 0) + bytes(32))


def feed_all(chunks: list[tuple[bytes, tuple[str, ...]]]) -> list:
    f = StreamFramer()
    out = []
    for i, (data, fds) in enumerate(chunks):
        out += f.feed(data, fds, i, i + 1)
    return out + f.close()


def test_whole_stream_in_one_read():
    out = feed_all([(A + B + C, ())])
    assert [x.request for x in out] == [8, 12, 5]
    assert [x.data for x in out] == [A, B, C]


def test_byte_at_a_time():
    data = A + B + C
    out = feed_all([(data[i : i + 1], ()) for i in range(len(data))])
    assert [x.data for x in out] == [A, B, C]
    assert not any(x.problems for x in out)


def test_fds_belong_to_the_message_holding_the_last_byte():
    # A(no fd) and B(fd) glued by the kernel into one read: the fd is B's
    out = feed_all([(A + B, ("eventfd",))])
    assert out[0].fds == () and out[1].fds == ("eventfd",)


def test_fds_of_a_split_message_wait_for_it():
    # the read ends inside C, so its fds are C's even though A and B complete first
    out = feed_all([(A + B + C[:20], ("memfd",)), (C[20:], ())])
    assert [x.fds for x in out] == [(), (), ("memfd",)]


def test_pipeline_keeps_directions_and_connections_apart():
    p = Pipeline()
    msgs = []
    msgs += p.feed(Frame(1, 1, "main", "f2b", A[:5]))
    msgs += p.feed(Frame(2, 2, "main", "f2b", B))
    msgs += p.feed(Frame(3, 1, "main", "f2b", A[5:]))
    assert [(x.conn, x.name) for x in msgs] == [(2, "SET_VRING_KICK"), (1, "SET_VRING_NUM")]
    assert msgs[1].frame == 3 and msgs[1].ts_ns == 1  # time of the first byte


def test_oversize_message_framed_whole_by_the_sender_is_decoded_whole():
    """Issue 16 item 1: the proxy forwards messages whole up to 64 KiB; one above the
    protocol's 4096 that fills its frame exactly keeps its framing (flagged oversize)."""
    big = m(5, struct.pack("<II", 0, 0) + bytes(5000))  # SET_MEM_TABLE, 5008-byte payload
    out = feed_all([(big, ("memfd",)), (A, ())])
    assert [x.request for x in out] == [5, 8] and not out[0].raw
    assert [p.code for p in out[0].problems] == ["oversize"] and out[0].fds == ("memfd",)
    assert not out[1].problems
    msgs = Pipeline().run([Frame(1, 1, "main", "f2b", big), Frame(2, 1, "main", "f2b", A)])
    got = [(x.name, [p.code for p in x.problems]) for x in msgs]
    assert (
        got[0][0] == "SET_MEM_TABLE" and "oversize" in got[0][1] and "framing_lost" not in got[0][1]
    )
    assert got[1] == ("SET_VRING_NUM", [])
    # split across frames, or with more bytes than it announces, it is not trusted as before
    split = feed_all([(big[:100], ()), (big[100:], ())])
    assert split[0].raw and "framing_lost" in [p.code for p in split[0].problems]


# -- the one framing core (vuinspect.framing), under the proxy, the decoder and the TUI ------


def test_cut_messages_gives_whole_spans_and_what_is_left() -> None:
    from vuinspect.framing import cut_messages

    data = A + B + C[:20]
    spans, rest, over = cut_messages(data, 4096)
    assert [data[s:e] for s, e in spans] == [A, B] and data[rest:] == C[:20] and over is None
    assert cut_messages(data, 4096, "<", len(A)) == ([(len(A), len(A) + len(B))], rest, None)
    assert cut_messages(b"", 4096) == ([], 0, None)
    assert cut_messages(A[:11], 4096) == ([], 0, None)  # not even a header yet


def test_cut_messages_stops_at_a_header_above_the_callers_limit() -> None:
    """The limit is the caller's: the decoder's 4096 stops where the proxy's 64 KiB goes on."""
    from vuinspect.framing import cut_messages

    big = m(5, bytes(5000))
    data = A + big + B
    assert cut_messages(data, 4096) == ([(0, len(A))], len(A), 5000)
    spans, rest, over = cut_messages(data, 64 * 1024)
    assert [data[s:e] for s, e in spans] == [A, big, B] and rest == len(data) and over is None


def test_one_message_is_the_header_of_a_frame_that_is_exactly_one_message() -> None:
    from vuinspect.framing import one_message

    assert one_message(A) == (8, 1, 8)
    assert one_message(A + B) is None and one_message(A[:-1]) is None and one_message(b"") is None
    big_endian = struct.pack(">III", 8, 1, 8) + struct.pack(">II", 0, 256)
    assert one_message(big_endian, ">") == (8, 1, 8) and one_message(big_endian) is None
