"""Framer: whole messages out, fds on the message holding the chunk's last byte."""

from __future__ import annotations

import struct
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from vuinspect.protocol.requests import FORWARD_MAX_PAYLOAD
from vuinspect.proxy.framing import Framer


def msg(req: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return struct.pack("=III", req, flags, len(payload)) + payload


def test_one_whole_message_is_passed_as_is() -> None:
    f = Framer()
    m = msg(1)
    assert f.feed(m, [7]) == [(m, [7])]
    assert f.pending == 0


def test_several_messages_in_one_chunk_fds_go_to_the_last() -> None:
    # Kernel: A(no fd) + B(fd) arrive as one chunk with B's fd.
    a, b = msg(1), msg(12, b"\x00" * 8)
    f = Framer()
    assert f.feed(a + b, [9]) == [(a, []), (b, [9])]


def test_chunk_ending_mid_message_gives_fds_to_that_message() -> None:
    a, b = msg(1), msg(5, b"x" * 40)
    f = Framer()
    # Chunk = A + first 20 bytes of B, with B's fds (short read: fds come with the first part).
    assert f.feed(a + b[:20], [3, 4]) == [(a, [])]
    assert f.pending == 20
    assert f.feed(b[20:], []) == [(b, [3, 4])]


def test_byte_at_a_time() -> None:
    m = msg(24, bytes(range(30)))
    f = Framer()
    out = []
    for i in range(len(m)):
        out += f.feed(m[i : i + 1], [5] if i == 0 else [])
    assert out == [(m, [5])]


def test_unframeable_size_passes_through_and_stays_raw() -> None:
    bad = struct.pack("=III", 1, 1, FORWARD_MAX_PAYLOAD + 1) + b"junk"
    f = Framer()
    out = f.feed(bad, [])
    assert out == [(bad, [])]
    assert f.lost is not None and "passing bytes through" in f.lost
    later = msg(1)
    assert f.feed(later[:5], [8]) == [(later[:5], [8])]


def test_fds_held_for_an_incomplete_message_are_bounded() -> None:
    """A message can carry at most 3 (here) fds: later ones go to ``excess`` at once."""
    big = msg(1, b"x" * 100)
    f = Framer(max_fds=3)
    assert f.feed(big[:20], [1, 2]) == []
    assert f.excess == []
    assert f.feed(big[20:21], [3, 4, 5]) == []
    assert f.pending_fds == [1, 2, 3] and f.excess == [4, 5]
    f.excess = []
    assert f.feed(big[21:], [6]) == [(big, [1, 2, 3, 6])]  # the sender's bound is the relay's
    assert f.excess == []


def test_flush_returns_incomplete_message_with_its_fds() -> None:
    m = msg(5, b"y" * 16)
    f = Framer()
    assert f.feed(m[:10], [11]) == []
    assert f.flush() == (m[:10], [11])
    assert f.flush() is None


# -- property: a model of unix_stream_read_generic (TECH.md §5) ----------------------------


@st.composite
def writes_and_reads(draw: st.DrawFn) -> tuple[list[tuple[bytes, list[int]]], list[int]]:
    n = draw(st.integers(1, 8))
    writes = []
    next_fd = 100
    for i in range(n):
        payload = draw(st.binary(max_size=40))
        nfds = draw(st.integers(0, 3))
        writes.append((msg(i + 1, payload), list(range(next_fd, next_fd + nfds))))
        next_fd += nfds
    reads = draw(st.lists(st.integers(1, 120), min_size=1, max_size=60))
    return writes, reads


def kernel_reads(
    writes: list[tuple[bytes, list[int]]], sizes: list[int]
) -> list[tuple[bytes, list[int]]]:
    """What successive recvmsg(size) return: fds come with the first read touching their
    write; a read stops after the write whose fds it took; fd-less bytes before are glued."""
    skbs = [[data, fds] for data, fds in writes]
    out = []
    i = 0
    sizes = list(sizes)
    while skbs:
        size = sizes[i % len(sizes)]
        i += 1
        chunk = b""
        got: list[int] = []
        while skbs and len(chunk) < size:
            data, fds = skbs[0]
            take = data[: size - len(chunk)]
            chunk += take
            if fds:
                got = fds
                skbs[0][1] = []
            if len(take) == len(data):
                skbs.pop(0)
            else:
                skbs[0][0] = data[len(take) :]
            if got:
                break
        out.append((chunk, got))
    return out


@settings(max_examples=300, deadline=None)
@given(writes_and_reads())
def test_any_kernel_chunking_gives_back_the_messages_with_their_fds(case) -> None:
    writes, sizes = case
    f = Framer()
    units = []
    for chunk, fds in kernel_reads(writes, sizes):
        units += f.feed(chunk, fds)
    assert f.flush() is None
    assert units == writes


# -- the proxy's limit against the decoder's (issue 16 item 1) ------------------------------


def test_a_message_above_the_protocol_limit_is_forwarded_whole_and_decoded_whole() -> None:
    """The proxy frames up to its own, larger limit; the decoder takes the unit it forwarded
    as that message, flagged oversize, with its framing (and the next message) kept."""
    from vuinspect.frames import Frame
    from vuinspect.pipeline import Pipeline
    from vuinspect.protocol.requests import MAX_PAYLOAD

    assert Framer().limit == FORWARD_MAX_PAYLOAD > MAX_PAYLOAD
    big = msg(5, struct.pack("=II", 0, 0) + bytes(5000))  # SET_MEM_TABLE, 5,008-byte payload
    small = msg(8, struct.pack("=II", 0, 256))
    f = Framer()
    units = f.feed(big[:1000], [40]) + f.feed(big[1000:] + small, [])
    assert units == [(big, [40]), (small, [])] and f.lost is None
    frames = [Frame(i + 1, 1, "main", "f2b", data) for i, (data, _) in enumerate(units)]
    got = [(m.name, m.size, m.problem_codes) for m in Pipeline().run(frames)]
    assert got[0][:2] == ("SET_MEM_TABLE", 5008) and "oversize" in got[0][2]
    assert "framing_lost" not in got[0][2]
    assert got[1][:2] == ("SET_VRING_NUM", 8) and got[1][2] == []


@settings(max_examples=200, deadline=None)
@given(writes_and_reads())
def test_the_decoder_cuts_any_chunking_as_the_proxy_does(case) -> None:
    """Both framers stand on framing.cut_messages: fed the same chunks, the decoder's
    messages (with their fds) are the proxy's units, whatever the kernel's chunking."""
    from vuinspect.decoder import StreamFramer

    writes, sizes = case
    order = "<" if sys.byteorder == "little" else ">"  # the host's, as msg() packs
    proxy, decoder = Framer(), StreamFramer("main", order)
    units, msgs = [], []
    for i, (chunk, fds) in enumerate(kernel_reads(writes, sizes)):
        units += proxy.feed(chunk, fds)
        msgs += decoder.feed(chunk, tuple(str(fd) for fd in fds), i, i + 1)
    msgs += decoder.close()
    assert [(m.data, [int(fd) for fd in m.fds]) for m in msgs] == units == writes
