"""stats.py: ``read --stats``'s tables: requests merged over connections (latency
percentiles of all of them), one row per connection, a filter's tally counting only what
it kept while keeping each connection's own facts."""

from __future__ import annotations

import gc
import json
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vuinspect.api import linked
from vuinspect.capture import read_frames
from vuinspect.filter import compile_filter
from vuinspect.frames import DATAPLANE_KINDS, Frame, event_frame
from vuinspect.pipeline import Pipeline
from vuinspect.session import Session
from vuinspect.state import MAX_PENDING, count_request
from vuinspect.stats import (
    KEEP_CLOSED,
    ConnStats,
    Firings,
    Tally,
    connection_table,
    format_stats,
    request_table,
    ring_table,
    tally,
)
from vuinspect.testing import wire

U64 = struct.Struct("<Q")
T0 = 1_764_000_000_000_000_000


def features_pairs(pipeline: Pipeline, conn: int, latencies_us: list[int]) -> list:
    out = []
    t = T0
    for lat in latencies_us:
        out += pipeline.feed(Frame(t, conn, "main", "f2b", wire.pack(wire.GET_FEATURES)))
        reply = wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, U64.pack(0))
        out += pipeline.feed(Frame(t + lat * 1000, conn, "main", "b2f", reply))
        t += 1_000_000
    return out


def test_requests_merge_over_connections_and_connections_stay_apart():
    p = Pipeline()
    features_pairs(p, 1, [10, 20])
    features_pairs(p, 2, [30, 40, 50])
    p.feed(Frame(T0 + 9_000_000, 2, "main", "f2b", wire.pack(wire.GET_QUEUE_NUM)))
    sessions = list(p.sessions.values())
    rows = request_table(sessions)
    assert [(r["name"], r["requests"], r["replies"]) for r in rows] == [
        ("GET_FEATURES", 5, 5),
        ("GET_QUEUE_NUM", 1, 0),
    ]
    assert rows[0]["latency_us"] == {"p50": 30.0, "p99": 50.0, "max": 50.0, "n": 5}
    assert rows[1]["latency_us"] == {"p50": None, "p99": None, "max": None, "n": 0}
    by_conn = {c["conn"]: c for c in connection_table(sessions)}
    assert by_conn[1]["messages"] == 4 and by_conn[1]["latency_us"]["max"] == 20.0
    assert by_conn[2]["waiting"] == ["GET_QUEUE_NUM"] and by_conn[2]["close_reason"] is None
    # the session's name for it, as everywhere; the old key stays an alias
    assert all(c["closed"] == c["close_reason"] for c in by_conn.values())
    assert by_conn[2]["duration_s"] == 0.009


def test_counts_of_problems_are_problem_count_with_the_old_key_as_alias():
    """A count is ``problem_count`` (as Session.problem_count); ``problems`` is a list of codes
    elsewhere (a message's, a ring row's), so here it stays only as the old key's alias."""
    p = Pipeline()
    features_pairs(p, 1, [10])
    reply = wire.pack(wire.GET_QUEUE_NUM, wire.REPLY_FLAGS, U64.pack(0))
    (msg,) = p.feed(Frame(T0 + 5_000_000, 1, "main", "b2f", reply))
    assert msg.problem_codes == ["reply_to_nothing"]
    sessions = list(p.sessions.values())
    rows = {r["name"]: r for r in request_table(sessions)}
    assert (rows["GET_FEATURES"]["problem_count"], rows["GET_QUEUE_NUM"]["problem_count"]) == (0, 1)
    (conn,) = connection_table(sessions)
    assert conn["problem_count"] == 1
    assert all(r["problems"] == r["problem_count"] for r in [*rows.values(), conn])


def test_a_filters_tally_counts_only_what_it_kept():
    p = Pipeline()
    msgs = features_pairs(p, 1, [10, 20, 30])
    tally = Tally(filtered=True)
    tally.pipeline = p
    for m in msgs:
        if m.reply and m.latency_us > 15:  # what `read --stats -f` would keep
            tally.add(m)
    label = p.sessions[1].label
    rows = tally.finish()
    (view,) = rows
    assert view.messages == 2 and view.label == label  # its own facts
    (row,) = request_table(rows)
    assert (row["requests"], row["replies"], row["latency_us"]["n"]) == (0, 2, 2)
    text = format_stats(rows, "latency_us > 15")
    assert text.startswith("Statistics of the messages matching: latency_us > 15\n\nRequests\n")
    assert "GET_FEATURES" in text


def test_the_tables_make_no_latencies_for_kinds_without_replies():
    """RequestStats makes its Latencies with the first reply (what a long read's garbage
    collector walks); the tables, which the TUI asks again and again, make none either."""
    from pathlib import Path

    from vuinspect.capture import read_frames

    p = Pipeline()
    list(p.run(read_frames(Path(__file__).parents[2] / "captures" / "blk.pcapng")))
    s = p.sessions[1]
    unanswered = [st for st in s.stats.values() if not st.replies]
    assert unanswered and all(st._latencies is None for st in unanswered)
    request_table([s]), connection_table([s])
    assert all(st._latencies is None for st in unanswered)


# -- read --stats keeps what it prints, not the sessions ------------------------------------

CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))
FILTERS = (None, "channel == main", "not reply", "problems", "conn == 1 or name ~ VRING")


class _Counted:
    """The old way (the reference): a session whose counters are a filter's."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.stats: dict = {}
        self.messages = 0
        self.problem_count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _reference(frames: list[Frame], flt: str | None) -> list:
    """What --stats printed before: every session kept, a filter's counts on top."""
    p = Pipeline()
    if flt is None:
        list(p.run(frames))
        return list(p.sessions.values())
    pred = compile_filter(flt)
    views: dict[int, _Counted] = {}
    for m in linked(p, frames):
        if pred(m) and not m.is_event and m.kind not in DATAPLANE_KINDS:
            view = views.get(m.conn) or views.setdefault(m.conn, _Counted(p.sessions[m.conn]))
            view.messages += 1
            view.problem_count += count_request(view.stats, m)
    return list(views.values())


def _tables(sessions: list, firings: Firings | None = None) -> str:
    return json.dumps(
        [request_table(sessions), connection_table(sessions), ring_table(sessions)]
    ) + format_stats(sessions, "", firings)


def _corpus() -> list[tuple[str, list[Frame]]]:
    from vuinspect.tui.samples import demo_frames, queue_frames

    out = [(p.name, list(read_frames(p))) for p in CAPTURES]
    out += [("demo", demo_frames()), ("queues", queue_frames())]  # many conns, rings, closes
    everything = sorted((f for _, fr in out for f in fr), key=lambda f: f.ts_ns)
    return [*out, ("all at once", everything)]


@pytest.mark.parametrize("flt", FILTERS)
def test_stats_rows_are_what_the_kept_sessions_printed(flt: str | None) -> None:
    for name, frames in _corpus():
        rows, firings = tally(frames, compile_filter(flt) if flt else None)
        assert all(isinstance(r, ConnStats) for r in rows), name
        assert _tables(rows, firings) == _tables(_reference(frames, flt), firings), name


def _connection(conn: int, n: int, t0: int) -> Iterator[Frame]:
    """An open, ``n`` answered GET_FEATURES, ``n`` GET_QUEUE_NUM never answered (a session
    holds those waiting, up to MAX_PENDING) and a close."""
    yield event_frame("open", t0, conn, {"label": f"c{conn}", "orientation": "frontend-connects"})
    reply = wire.pack(wire.GET_FEATURES, wire.REPLY_FLAGS, U64.pack(0))
    t = t0
    for i in range(n):
        t += 2000
        yield Frame(t, conn, "main", "f2b", wire.pack(wire.GET_FEATURES))
        yield Frame(t + 1000 + i % 97, conn, "main", "b2f", reply)
    for _ in range(n):
        t += 1000
        yield Frame(t, conn, "main", "f2b", wire.pack(wire.GET_QUEUE_NUM))
    yield event_frame("close", t + 1000, conn, {"reason": "peer closed"})


def _held(n: int, flt: str | None) -> int:
    """Bytes the --stats rows of 2 connections of ``n`` exchanges each hold."""
    pred = compile_filter(flt) if flt else None
    frames = (f for conn in (1, 2) for f in _connection(conn, n, conn * 10**12))
    gc.collect()
    tracemalloc.start()
    try:
        rows, firings = tally(frames, pred)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert [r.messages for r in rows] == [3 * n, 3 * n]
    assert rows[0].waiting_names == ["GET_QUEUE_NUM"] * min(n, MAX_PENDING)
    return held


def test_stats_rows_hold_no_more_for_longer_connections() -> None:
    """A connection's row holds what --stats prints (counts, bounded latencies, the owed
    requests as runs), not its session: its messages and pairing queue are not kept, so
    ten times the messages per connection is no more memory (a session held 4096 waiting
    messages of each)."""
    flt = "not reply or conn > 0"  # (a filter: the counts are the tally's own)
    _held(50, flt)  # (caches the first read fills)
    small, big = _held(500, flt), _held(5000, flt)
    assert big < small + 16_384, (small, big)


def test_read_stats_keeps_few_closed_sessions_whatever_the_connections() -> None:
    """A capture of many connections: the pipeline holds at most KEEP_CLOSED closed
    sessions at any time; every connection still has its row, in its order."""
    t = Tally()
    most = 0

    def frames() -> Iterator[Frame]:
        nonlocal most
        for conn in range(1, 301):
            yield from _connection(conn, 3, conn * 10**9)
            most = max(most, len(t.pipeline.sessions))

    rows = t.read(frames())
    assert most == KEEP_CLOSED and not t.pipeline.sessions
    assert [r.conn for r in rows] == list(range(1, 301))
    assert {(r.messages, r.close_reason, tuple(r.waiting_names)) for r in rows} == {
        (9, "peer closed", ("GET_QUEUE_NUM",) * 3)
    }


def test_a_connection_number_heard_again_long_after_its_close_is_still_one_row() -> None:
    """Frames of a connection number long closed (KEEP_CLOSED closes later) start a new
    session; its row adds to the first one's, in the first one's place."""

    def frames() -> Iterator[Frame]:
        yield from _connection(1, 2, 10**9)
        for conn in range(2, KEEP_CLOSED + 3):
            yield from _connection(conn, 1, conn * 10**9)
        yield from _connection(1, 3, 10**12)

    rows = Tally().read(frames())
    assert [r.conn for r in rows] == list(range(1, KEEP_CLOSED + 3))
    first = rows[0]
    assert (first.messages, first.waiting_names) == (6 + 9, ["GET_QUEUE_NUM"] * 5)
    assert first.stats["main:GET_FEATURES"].replies == 5 and first.end_ns > 10**12
