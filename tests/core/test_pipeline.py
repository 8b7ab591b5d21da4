"""The pipeline's public face: sinks, the owes-reply query, frame numbers, closed sessions."""

from __future__ import annotations

import gc
import struct
import time
import tracemalloc
from collections.abc import Iterator

from vuinspect.frames import Frame, event_frame
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.session import Session
from vuinspect.state import MAX_PENDING
from vuinspect.tui.samples import Script, demo_frames

GET_FEATURES, SET_FEATURES, SET_OWNER, GET_PROTOCOL_FEATURES = 1, 2, 3, 15


class Recorder:
    """A sink that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_message(self, msg: Message) -> None:
        self.calls.append(("message", msg))

    def on_reply(self, request: Message, reply: Message) -> None:
        self.calls.append(("reply", request, reply))

    def on_close(self, session: Session) -> None:
        self.calls.append(("close", session))


class RepliesOnly:
    """A sink with one hook: the others are simply not called."""

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def on_reply(self, request: Message, reply: Message) -> None:
        self.pairs.append((request.frame, reply.frame))


def test_sinks_see_every_message_each_reply_and_the_close() -> None:
    frames = demo_frames()
    rec, replies = Recorder(), RepliesOnly()
    pipeline = Pipeline(sinks=[rec])
    pipeline.add_sink(replies)
    out = list(pipeline.run(frames))
    told = [c[1] for c in rec.calls if c[0] == "message"]
    assert [id(m) for m in told] == [id(m) for m in out]  # every one, in the order returned
    pairs = [(c[1], c[2]) for c in rec.calls if c[0] == "reply"]
    paired = [m for m in out if m.reply and m.reply_to is not None]
    assert pairs and len(pairs) == len(paired)
    for request, reply in pairs:
        assert not request.reply and reply.reply
        assert reply.reply_to == request.frame and request.reply_in == reply.frame
        assert request.request == reply.request and request.conn == reply.conn
    assert replies.pairs == [(q.frame, r.frame) for q, r in pairs]
    closes = [c[1] for c in rec.calls if c[0] == "close"]
    closed_events = [m for m in out if m.kind == "close" and m.channel == "main"]
    assert [s.conn for s in closes] == [m.conn for m in closed_events]
    assert all(s.closed_ns is not None for s in closes)
    # the close comes after its event was told
    i = rec.calls.index(("close", closes[0]))
    assert rec.calls[i - 1][1].kind == "close"


def test_owes_reply_until_the_reply_and_not_after_the_close() -> None:
    s = Script()
    s.open(1, "/run/a.sock")
    s.request(1, GET_FEATURES)  # reply always due
    s.request(1, SET_OWNER, need_reply=True)  # REPLY_ACK unknown: a reply may come
    pipeline = Pipeline()
    (open_ev,) = pipeline.feed(s.frames[0])
    (get,) = pipeline.feed(s.frames[1])
    assert not pipeline.owes_reply(open_ev)
    assert pipeline.owes_reply(get)
    (own,) = pipeline.feed(s.frames[2])
    assert not pipeline.owes_reply(own) and pipeline.owes_reply(own, optional=True)
    assert pipeline.owed(1) == [get, own] and pipeline.owed() == [get, own]
    s.frames = []
    s.reply(1, GET_FEATURES, {"features": 0})
    (reply,) = pipeline.feed(s.frames[0])
    assert not pipeline.owes_reply(get) and not pipeline.owes_reply(reply)
    assert pipeline.owes_reply(own, optional=True)
    s.frames = []
    s.request(1, GET_PROTOCOL_FEATURES)
    s.close(1, "eof")
    (proto,) = pipeline.feed(s.frames[0])
    assert pipeline.owes_reply(proto)
    pipeline.feed(s.frames[1])
    assert not pipeline.owes_reply(proto)  # the connection is gone: nothing is owed any more
    assert "missing_reply" in [p.code for p in proto.problems]


def test_owes_reply_is_cheap_when_a_peer_never_answers() -> None:
    """Many requests waiting (as many as a session keeps, state.MAX_PENDING): the oldest
    and the newest are found without a scan."""
    s = Script(step_ns=10)
    s.open(1, "/run/a.sock")
    for _ in range(MAX_PENDING):
        s.request(1, GET_FEATURES)
    pipeline = Pipeline()
    msgs = [m for f in s.frames for m in pipeline.feed(f)]
    requests = msgs[1:]
    assert len(pipeline.owed(1)) == MAX_PENDING
    t = time.perf_counter()
    for _ in range(20_000):  # read's question (the oldest held) and the TUI's (the newest)
        assert pipeline.owes_reply(requests[0]) and pipeline.owes_reply(requests[-1])
    assert time.perf_counter() - t < 2.0  # a scan each time would take ~10 seconds
    assert pipeline.owes_reply(requests[MAX_PENDING // 2])  # (the middle: a scan, still right)
    assert not pipeline.owes_reply(msgs[0])


def test_feed_number_keeps_the_capture_frame_numbers() -> None:
    frames = demo_frames()
    conn = frames[0].conn
    pipeline = Pipeline()
    got = []
    for i, frame in enumerate(frames):
        if frame.conn == conn:
            got += pipeline.feed(frame, number=i + 1)
    whole = [m for m in Pipeline().run(frames) if m.conn == conn]
    assert [m.frame for m in got] == [m.frame for m in whole][: len(got)]
    assert [m.reply_to for m in got] == [m.reply_to for m in whole][: len(got)]


def short_connections(n: int, first: int = 1) -> Iterator[Frame]:
    """``n`` connections that open, negotiate a little and close, one after another."""
    for conn in range(first, first + n):
        s = Script(t0_ns=1_700_000_000_000_000_000 + conn * 1_000_000)
        s.open(conn, f"/run/vhost/c{conn}.sock")
        s.request(conn, GET_FEATURES)
        s.reply(conn, GET_FEATURES, {"features": 1 << 32})
        s.request(conn, SET_FEATURES, {"features": 1 << 32})
        s.request(conn, SET_OWNER, need_reply=True)
        s.close(conn, "eof")
        yield from s.frames


def _growth(pipeline: Pipeline, warm: int, more: int) -> int:
    """Bytes still allocated after ``more`` connections, over those after ``warm``."""
    for f in short_connections(warm):
        pipeline.feed(f)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for f in short_connections(more, first=warm + 1):
            pipeline.feed(f)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def test_closed_sessions_are_dropped_so_memory_stays_bounded() -> None:
    """A long-running consumer (keep_closed=False, or a number) holds only what is open."""
    closes = [0, 0]  # how many, the last conn

    class Closes:
        def on_close(self, session: Session) -> None:
            closes[0] += 1
            closes[1] = session.conn

    dropping = Pipeline(keep_closed=False, sinks=[Closes()])
    grew = _growth(dropping, 200, 2000)
    assert dropping.sessions == {}
    assert closes == [2200, 2200]  # each told before it was dropped
    assert grew < 64 * 1024, grew

    keeping = Pipeline()  # read and the TUI on a file keep them: that memory grows
    kept = _growth(keeping, 200, 2000)
    assert len(keeping.sessions) == 2200
    assert kept > 20 * grew and kept > 1_000_000, (kept, grew)

    bounded = Pipeline(keep_closed=10)
    for f in short_connections(300):
        bounded.feed(f)
    assert sorted(bounded.sessions) == list(range(291, 301))  # the ten most recent
    assert all(s.closed_ns is not None for s in bounded.sessions.values())


def test_forget_drops_a_connection_and_its_partial_message() -> None:
    s = Script()
    s.open(7, "/run/a.sock")
    s.request(7, GET_FEATURES)
    pipeline = Pipeline()
    pipeline.feed(s.frames[0])
    head = s.frames[1]
    assert pipeline.feed(Frame(head.ts_ns, 7, "main", "f2b", head.data[:5])) == []
    pipeline.forget(7)
    assert pipeline.sessions == {} and pipeline.owed() == []
    assert pipeline.close() == []  # no partial message left to report


def test_on_reply_gets_the_request_paired_without_copying_the_queue() -> None:
    """A reply that answers a request out of order, behind many waiting: on_reply gets that
    request, and telling costs no copy of the waiting queue per reply (was O(n) each; the
    queue is as long as a session keeps, state.MAX_PENDING)."""
    n = MAX_PENDING - 1
    s = Script(step_ns=10)
    s.open(1, "/run/a.sock")
    for _ in range(n):
        s.request(1, GET_FEATURES)
    s.request(1, GET_PROTOCOL_FEATURES)
    s.reply(1, GET_PROTOCOL_FEATURES, {"features": 0})  # the newest: out of order
    for _ in range(n):
        s.reply(1, GET_FEATURES, {"features": 0})
    replies = RepliesOnly()
    pipeline = Pipeline(sinks=[replies])
    t = time.perf_counter()
    msgs = [m for f in s.frames for m in pipeline.feed(f)]
    assert time.perf_counter() - t < 10.0  # (a queue copy per reply: 1.7e7 steps here)
    assert len(replies.pairs) == n + 1
    assert replies.pairs[0] == (msgs[n + 1].frame, msgs[n + 2].frame)
    assert replies.pairs[1] == (msgs[1].frame, msgs[n + 3].frame)
    assert replies.pairs[-1] == (msgs[n].frame, msgs[-1].frame)


def test_connections_between_messages_share_no_bytes_through_the_idle_framer() -> None:
    """An idle framer goes back to the pipeline's pool (a connection between messages holds
    none); a connection holding half a message, or fds without bytes, keeps its own."""
    get = struct.pack("<III", GET_FEATURES, 1, 0)
    p = Pipeline()
    assert p.feed(Frame(1, 1, "main", "f2b", get[:5])) == []  # half a header on conn 1
    assert [m.conn for m in p.feed(Frame(2, 2, "main", "f2b", get))] == [2]
    assert p.feed(Frame(3, 3, "main", "f2b", b"", fds=("memfd:x",))) == []  # fds, no bytes
    assert [m.conn for m in p.feed(Frame(4, 2, "main", "f2b", get))] == [2]
    (one,) = p.feed(Frame(5, 1, "main", "f2b", get[5:]))
    assert (one.conn, one.name, one.raw, one.problems) == (1, "GET_FEATURES", get, [])
    (three,) = p.feed(Frame(6, 3, "main", "f2b", get))
    assert (three.conn, three.fds, three.raw) == (3, ("memfd:x",), get)
    # a consumer that stops midway leaves the frame's rest with its own connection
    two = get + get
    it = p.feed_iter(Frame(7, 4, "main", "f2b", two))
    assert next(it).conn == 4
    assert [m.conn for m in p.feed(Frame(8, 5, "main", "f2b", get))] == [5]
    assert [m.conn for m in p.close() if m.kind == "message"] == [4]


def test_a_stream_keeps_its_byte_order_and_a_close_its_streams_order() -> None:
    """An idle stream holds no framer, yet frames as it began: an open frame naming big-endian
    after a stream's first bytes does not change it (as when each stream kept its framer;
    found by the mutation corpus), and a close ends the streams in the order they began."""
    get = struct.pack("<III", GET_FEATURES, 1, 0)
    num = struct.pack("<IIIII", 8, 1, 8, 0, 256)  # SET_VRING_NUM, little-endian
    p = Pipeline()
    assert [m.name for m in p.feed(Frame(1, 1, "main", "f2b", get))] == ["GET_FEATURES"]
    p.feed(event_frame("open", 2, 1, {"byteorder": "big"}))
    (msg,) = p.feed(Frame(3, 1, "main", "f2b", num))
    assert (msg.kind, msg.name, msg.size) == ("message", "SET_VRING_NUM", 8)
    q = Pipeline()
    q.feed(Frame(1, 2, "main", "b2f", get))  # begins first, idle
    q.feed(Frame(2, 2, "main", "f2b", get[:6]))
    q.feed(Frame(3, 2, "main", "b2f", get[:7]))
    ended = q.feed(event_frame("close", 4, 2, {"reason": "eof"}))
    assert [(m.direction, len(m.raw)) for m in ended if m.kind != "close"] == [
        ("b2f", 7),
        ("f2b", 6),
    ]
