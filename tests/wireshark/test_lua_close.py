"""A connection's end in the Lua dissector, against the Python pipeline: the close of the
back-end channel ends only that channel (Pipeline._flush_conn), and closed sessions are
kept for the messages a capture may still hold for them."""

from __future__ import annotations

import pytest
import ws_pdml as W
from ws_samples import Clock

from vuinspect.encode import build
from vuinspect.frames import Frame, event_frame
from vuinspect.protocol.requests import BackendRequest, FrontendRequest

GET_FEATURES = FrontendRequest.GET_FEATURES

pytestmark = [pytest.mark.tshark, pytest.mark.timeout(300)]


def test_backend_channel_close_leaves_the_main_channel_alone(tmp_path):
    """A request waits and half a message is on the main channel when the back-end channel
    closes: the reply still pairs, nothing is missing, the half message completes."""
    clock, conn = Clock(), 5
    ask = build("main", GET_FEATURES)
    rest = build("main", FrontendRequest.SET_VRING_NUM, {"index": 0, "num": 256})  # two frames
    frames = [
        event_frame("open", clock(), conn, {"label": "a.sock"}),
        Frame(clock(), conn, "main", "f2b", ask),
        Frame(clock(), conn, "main", "f2b", rest[:6]),
        Frame(
            clock(), conn, "backend", "b2f", build("backend", BackendRequest.BACKEND_IOTLB_MSG)[:5]
        ),  # cut by the close
        event_frame("close", clock(), conn, {"reason": "back-end channel closed"}, "backend"),
        Frame(
            clock(), conn, "main", "b2f", build("main", GET_FEATURES, {"features": 1}, reply=True)
        ),
        Frame(clock(), conn, "main", "f2b", rest[6:]),
        event_frame("close", clock(), conn, {"reason": "closed"}),
    ]
    py, _ = W.agreeing_views(W.write_capture(tmp_path / "cap.pcapng", frames))
    codes = {m["name"]: {p["code"] for p in m["problems"]} for m in py}
    request = next(m for m in py if m["name"] == "GET_FEATURES" and not m["reply"])
    assert request["reply_in"] is not None
    assert "missing_reply" not in codes["GET_FEATURES"]
    assert "SET_VRING_NUM" in codes  # framed whole across the back-end's close
    assert any("truncated" in c for m in py for p in m["problems"] for c in [p["code"]])


def test_a_recently_closed_connection_keeps_its_session(tmp_path):
    """70 connections end one after another; the newest closed one then sends a reply its
    request waited for: it pairs (its session is kept) in Lua as in Python."""
    clock, frames = Clock(), []
    for conn in range(1, 71):
        frames += [
            event_frame("open", clock(), conn, {"label": f"c{conn}.sock"}),
            Frame(clock(), conn, "main", "f2b", build("main", GET_FEATURES)),
        ]
        if conn < 70:
            frames.append(
                Frame(
                    clock(),
                    conn,
                    "main",
                    "b2f",
                    build("main", GET_FEATURES, {"features": 1}, reply=True),
                )
            )
        frames.append(event_frame("close", clock(), conn, {"reason": "closed"}))
    late = build("main", GET_FEATURES, {"features": 1}, reply=True)
    frames.append(Frame(clock(), 70, "main", "b2f", late))
    py, _ = W.agreeing_views(W.write_capture(tmp_path / "cap.pcapng", frames))
    assert py[-1]["reply"] and py[-1]["reply_to"] is not None
