"""stats.py: ``read --stats``'s tables: requests merged over connections (latency
percentiles of all of them), one row per connection, a filter's tally counting only what
it kept while keeping each connection's own facts."""

from __future__ import annotations

import struct

from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.stats import Tally, connection_table, format_stats, request_table
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
    assert by_conn[2]["waiting"] == ["GET_QUEUE_NUM"] and by_conn[2]["closed"] is None
    assert by_conn[2]["duration_s"] == 0.009


def test_a_filters_tally_counts_only_what_it_kept():
    p = Pipeline()
    msgs = features_pairs(p, 1, [10, 20, 30])
    tally = Tally()
    for m in msgs:
        if m.reply and m.latency_us > 15:  # what `read --stats -f` would keep
            tally.add(m, p.sessions[m.conn])
    (view,) = tally.sessions()
    assert view.messages == 2 and view.label == p.sessions[1].label  # its own facts
    (row,) = request_table(tally.sessions())
    assert (row["requests"], row["replies"], row["latency_us"]["n"]) == (0, 2, 2)
    text = format_stats(tally.sessions(), "latency_us > 15")
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
