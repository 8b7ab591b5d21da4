"""dataplane/text.py: the ring and notify lines (``read --rings``, the TUI's rows) from the
sample JSON a file holds: wrong types read as ?, control characters escaped, lists cut."""

from __future__ import annotations

from vuinspect.dataplane.text import (
    MAX_CHAINS_SHOWN,
    MAX_DESCS_SHOWN,
    detail_lines,
    in_message_list,
    notify_summary,
    resolved_text,
    ring_summary,
)


def test_ring_summary_split_packed_and_unreadable():
    split = {"vring": 0, "layout": "split", "num": 256, "avail_idx": 14, "used_idx": 10}
    split |= {"in_flight": 4, "used_event": 9, "event": "tick"}
    assert ring_summary(split) == (
        "vring 0 split num=256 avail=14 used=10 in_flight=4 used_event=9 [tick]"
    )
    packed = {"vring": 1, "layout": "packed", "num": 8, "avail_idx": 1, "used_idx": 1}
    packed |= {"in_flight": 0, "avail_wrap": 1, "used_wrap": 0, "call_fd": "none"}
    assert ring_summary(packed).endswith("wrap=1/0 call_fd=none")
    assert ring_summary({"vring": 2, "num": 4, "ok": False}) == "vring 2 ? num=4 unreadable"
    assert "call_fd" not in ring_summary({**packed, "call_fd": "fd"})


def test_what_a_file_can_put_there_is_shown_safely():
    hostile = {"vring": True, "layout": "\x1b[2Jsplit-and-much-more", "num": "256", "ok": True}
    hostile |= {"event": "\x07" * 40, "inflight": {"count": 3}}
    line = ring_summary(hostile)
    assert line.startswith("vring ? ") and "num=?" in line and "inflight_fd=3" in line
    assert "\x1b" not in line and "\x07" not in line
    assert notify_summary({"vring": 0, "signal": "kick\x1b[31m", "count": 7}) == (
        "vring 0 kick\\x1b[31 x7"
    )
    assert notify_summary({"vring": 0, "signal": "call", "count": 2, "first_ns": 0}) == (
        "vring 0 call x2"
    )
    assert notify_summary({"signal": "err", "count": 2, "first_ns": 0, "last_ns": 9_000_000}) == (
        "vring ? err x2 over 9.0 ms"
    )


def test_resolved_text_and_routine_samples():
    p = {"resolved": [{"code": "ring_stalled", "duration_ns": 2_500_000_000, "resolution": "kick"}]}
    assert resolved_text(p) == ["resolved ring_stalled after 2.5 s (kick)"]
    assert resolved_text({"resolved": ["junk", {"code": "x"}]}) == ["resolved x ()"]

    class Msg:
        def __init__(self, kind: str, problems: list, payload: dict) -> None:
            self.kind, self.problems, self.payload = kind, problems, payload

    assert in_message_list(Msg("message", [], {}))
    assert not in_message_list(Msg("ring", [], {}))  # routine
    assert in_message_list(Msg("ring", ["a problem"], {}))
    assert in_message_list(Msg("notify", [], {"resolved": []}))


def test_detail_lines_are_bounded():
    desc = {"index": 1, "addr": 0x1000, "len": 512, "flag_names": ["NEXT", "WRITE"] * 5}
    chain = {
        "head": 1,
        "descs": [desc] * (MAX_DESCS_SHOWN + 5),
        "readable": 16,
        "writable": 512,
        "header": {"layout": "virtio_blk_outhdr", "type": 0, "type_name": "IN", "sector": 8},
        "problems": [{"code": "c", "text": "t" * 500}] * 9,
    }
    lines = detail_lines({"chains": [chain] * (MAX_CHAINS_SHOWN + 3)})
    per_chain = 1 + MAX_DESCS_SHOWN + 4
    assert len(lines) == MAX_CHAINS_SHOWN * per_chain
    assert lines[0] == (
        "        head 1: 13 desc, 16 B out, 512 B in  virtio_blk_outhdr IN type=0 sector=8"
    )
    assert lines[1] == "          desc 1 addr=0x1000 len=512 NEXT|WRITE|NEXT|WRITE"
    assert all(len(x) < 240 for x in lines)
    assert detail_lines({"chains": "junk"}) == [] and detail_lines({}) == []
    q = {"inflight": {"version": 1, "desc_num": 8, "used_idx": 3, "count": 1}}
    q["inflight"]["descs"] = [{"index": 5, "counter": 2}]
    assert detail_lines(q) == [
        "        inflight region: v1 desc_num=8 used_idx=3 marked 1: desc#counter 5#2"
    ]
