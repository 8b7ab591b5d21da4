"""What a connection costs ``read`` in memory: a crafted capture of one short message per
connection number (never closed) must not make the reader hold ~70x the file's size."""

from __future__ import annotations

import gc
import struct
import tracemalloc

from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.requests import FrontendRequest

#: Bytes a one-message connection may cost (its session, framer, message and the
#: pipeline's entries for it); it was ~5.4 KB (two pending deques, the session's
#: instance dict past 30 attributes, a DataPlane for a connection with no ring).
BOUND = 1500
N = 2000


def one_message_connections(n: int) -> list[Frame]:
    """``n`` connections of one GET_FEATURES each (it waits for a reply forever)."""
    get = struct.pack("<III", FrontendRequest.GET_FEATURES, 1, 0)
    return [Frame(1_000 + conn, conn, "main", "f2b", get) for conn in range(n)]


def test_a_one_message_connection_costs_little_memory() -> None:
    frames = one_message_connections(N)
    pipeline = Pipeline()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for frame in frames:
            for _msg in pipeline.feed_iter(frame):
                pass  # (read prints a message and drops it; the session keeps what it needs)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pipeline.sessions) == N
    assert len(pipeline.owed()) == N  # every request still waits: nothing was dropped
    per_connection = (after - before) / N
    assert per_connection < BOUND, f"{per_connection:.0f} bytes a connection"


def test_reading_every_session_as_the_views_do_makes_no_data_plane() -> None:
    """The Connections view ranks every session and the Queues view and ``--stats`` read
    each one's data plane: reading must not give each connection one (~260 B each; the
    ranking's own entries are ~170 B a connection)."""
    from vuinspect.stats import ring_table
    from vuinspect.tui.queues_data import RingRows, queue_rows
    from vuinspect.tui.ranking import Ranking

    pipeline = Pipeline()
    for frame in one_message_connections(N):
        pipeline.feed(frame)
    sessions = list(pipeline.sessions.values())
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        ranking = Ranking(pipeline.sessions)
        assert len(ranking.page(0, 10)) == 10
        assert ring_table(sessions) == []
        assert queue_rows(sessions, RingRows(), 0) == []
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_connection = (after - before) / N
    assert per_connection < 250, f"{per_connection:.0f} bytes a connection"
