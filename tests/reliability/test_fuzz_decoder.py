"""Decoder fuzzing: hypothesis streams and mutated real-looking sessions through the Pipeline.

Invariants (vuinspect/fuzz/check.py): nothing escapes ``Pipeline.feed``/``close``
or the renderer; every input byte and fd comes out of exactly one message;
well-formed messages re-encode to their own payload bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vuinspect.capture import read_frames
from vuinspect.encode import message
from vuinspect.frames import Frame
from vuinspect.fuzz.check import check_frames, run_pipeline
from vuinspect.fuzz.mutate import byte_at_a_time, mutate_frames, resplit
from vuinspect.render import summary_line
from vuinspect.samples import device_start, every_message

from .conftest import report, scaled
from .strategies import damaged, streams, well_formed

CAPTURES = sorted((Path(__file__).parents[2] / "captures").glob("*.pcapng"))
FUZZ = settings(
    max_examples=scaled(300, 3000), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def corpus() -> list[list[Frame]]:
    out = [device_start(), every_message()]
    out += [list(read_frames(p)) for p in CAPTURES]
    return out


# -- hypothesis ---------------------------------------------------------------------------
@FUZZ
@given(streams(garbage=False))
def test_well_formed_streams_reencode_exactly(frames) -> None:
    out = check_frames(frames)
    # every message was framed whole and re-encoded (or has no payload layout)
    assert out.raw_chunks == 0
    assert not {
        "framing_lost",
        "oversize",
        "wrong_size",
        "bad_count",
        "nonzero_padding",
        "truncated_header",
        "truncated_payload",
    } & set(out.problems)


@FUZZ
@given(streams(garbage=True))
def test_damaged_streams_lose_nothing(frames) -> None:
    check_frames(frames)


@FUZZ
@given(st.lists(damaged(), min_size=1, max_size=6), st.integers(1, 5))
def test_lying_headers_in_any_split(chunks, pieces) -> None:
    """Sizes up to and past the maximum, short and long payloads, split anywhere."""
    data = b"".join(chunks)
    step = max(1, len(data) // pieces)
    frames = [
        Frame(i, 1, "main", "f2b", data[i : i + step], ("eventfd",) if i == 0 else ())
        for i in range(0, len(data), step)
    ]
    check_frames(frames)


@settings(max_examples=scaled(60, 600), deadline=None)
@given(st.lists(well_formed(), min_size=1, max_size=6))
def test_byte_at_a_time_gives_the_same_messages(items) -> None:
    whole = [
        Frame(i + 1, 1, "main", "f2b", data)
        for i, (ch, rep, data, _) in enumerate(items)
        if ch == "main" and not rep
    ]
    if not whole:
        return
    a = [(m.raw, m.name, m.payload, m.problem_codes) for m in run_pipeline(whole)]
    b = [(m.raw, m.name, m.payload, m.problem_codes) for m in run_pipeline(byte_at_a_time(whole))]
    assert a == b
    check_frames(byte_at_a_time(whole))


# -- mutation fuzzing from real-looking sessions ---------------------------------------------
@pytest.mark.timeout(scaled(120, 3600))
def test_mutated_sessions(fuzz_count) -> None:
    seeds = corpus()
    n = fuzz_count(1500)
    totals = {"messages": 0, "raw": 0, "reencoded": 0}
    for i in range(n):
        rng = random.Random(i)
        frames = mutate_frames(rng.choice(seeds), rng)
        try:
            out = check_frames(frames)
        except Exception as exc:
            raise AssertionError(f"input {i} (random.Random({i})) failed: {exc!r}") from exc
        totals["messages"] += out.messages
        totals["raw"] += out.raw_chunks
        totals["reencoded"] += out.reencoded
    assert totals["reencoded"] > n * 5  # the mutants are mostly still well-formed
    assert totals["raw"] > 0  # and some lost their framing
    report(
        "decoder_mutated_sessions",
        inputs=n,
        messages=totals["messages"],
        raw_chunks=totals["raw"],
        reencoded=totals["reencoded"],
        failures=0,
    )


def test_corpus_resplit_and_byte_at_a_time() -> None:
    for seed in corpus():
        whole = check_frames(seed)
        assert whole.raw_chunks == 0 and whole.reencoded > 0
        for k in range(5):
            assert check_frames(resplit(seed, random.Random(k))).reencoded == whole.reencoded
        assert check_frames(byte_at_a_time(seed)).reencoded == whole.reencoded


# -- regressions found by the fuzzers ------------------------------------------------------------
@pytest.mark.parametrize(
    "request_id, payload",
    [
        (37, bytes(8) + bytes(8)),  # ADD_MEM_REG cut after guest_phys_addr
        (37, bytes(8) + bytes(24)),  # ... before mmap_offset
        (38, bytes(8) + bytes(16)),  # REM_MEM_REG cut before userspace_addr
    ],
)
def test_cut_mem_reg_does_not_raise(request_id, payload) -> None:
    """session._apply_request indexed fields a cut payload does not have (KeyError)."""
    msgs = run_pipeline([Frame(1, 1, "main", "f2b", message(request_id, payload))])
    assert "wrong_size" in msgs[0].problem_codes


@pytest.mark.parametrize("request_id", [5, 24])
def test_payload_too_short_for_its_count_is_wrong_size(request_id) -> None:
    """An empty SET_MEM_TABLE was reported with no problem at all (payload.decode_layout)."""
    msgs = run_pipeline([Frame(1, 1, "main", "f2b", message(request_id, b""))])
    assert "wrong_size" in msgs[0].problem_codes, msgs[0].problem_codes


@pytest.mark.parametrize(
    "request_id, payload",
    [
        (11, b"\x01\x00"),  # vring_state with half an index
        (9, bytes(12)),  # vring_addr without desc
        (8, bytes(4)),  # vring_num without num
        (24, bytes(8)),  # config without flags
        (6, bytes(8)),  # log without mmap_offset
        (31, bytes(16)),  # inflight without num_queues
        (37, bytes(16)),  # mem_reg without memory_size
    ],
)
def test_summary_of_a_cut_payload(request_id, payload) -> None:
    """render.payload_summary indexed missing fields: `vuinspect read` tracebacked."""
    msgs = run_pipeline([Frame(1, 1, "main", "f2b", message(request_id, payload))])
    line = summary_line(msgs[0])
    assert msgs[0].name in line


@pytest.mark.parametrize("then_close", [False, True])
def test_fds_with_no_bytes_are_not_lost(then_close) -> None:
    """A data frame with fds and no bytes (a damaged capture) made its fds vanish
    (decoder.StreamFramer.close returned nothing); found by the 1M-input run, seed 6208."""
    frames = [Frame(1, 1, "main", "f2b", b"", ("eventfd",))]
    if then_close:
        from vuinspect.frames import event_frame

        frames.append(event_frame("close", 2, 1, {"reason": "end"}))
    out = check_frames(frames)
    assert out.problems["fd_count"] == 1
