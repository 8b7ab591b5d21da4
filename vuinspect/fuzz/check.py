"""The invariants every input must satisfy, whatever its bytes.

For frames through :class:`~vuinspect.pipeline.Pipeline`:

* nothing escapes ``feed``/``close`` but the messages;
* nothing is dropped or invented: the ``raw`` bytes of the messages of one
  (connection, channel, direction), joined, are exactly the data bytes that
  went in, and every fd description that went in comes out once, in order;
* a well-formed decoded message re-encodes to its own payload bytes;
* every message renders as a summary line and as JSON (what ``read`` prints),
  and the line shows no control, bidi or line-separator character raw (texts
  a peer or a capture chose are escaped: render.safe_text).

For bytes through :class:`~vuinspect.capture.CaptureReader`: it refuses at
open (or before the first frame of ours) with :class:`CaptureFormatError`, or
iterates and stops with ``reader.error`` set; no other exception, and the
frames it did read satisfy the pipeline invariants.  The random-access
:class:`~vuinspect.capture.CaptureIndex` must agree on every frame the reader read.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from vuinspect.capture import CaptureError, CaptureFormatError, CaptureReader, build_index
from vuinspect.encode import encode_layout
from vuinspect.frames import DATAPLANE_KINDS, Channel, Direction, Frame
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.layouts import ALL_LAYOUTS
from vuinspect.protocol.requests import HEADER_SIZE
from vuinspect.render import safe_text, summary_line, to_json

LAYOUTS = {lay.name: lay for lay in ALL_LAYOUTS}
#: Problems that mean the payload bytes are not what the layout describes, so
#: re-encoding the decoded values cannot give them back.
NOT_WELL_FORMED = frozenset(
    {
        "truncated_header",
        "truncated_payload",
        "oversize",
        "framing_lost",
        "wrong_size",
        "bad_count",
        "nonzero_padding",
    }
)


class InvariantError(AssertionError):
    """An input broke an invariant; the text says which and where."""


@dataclass
class Outcome:
    """What one input produced, for statistics over a fuzzing run."""

    messages: int = 0
    raw_chunks: int = 0
    reencoded: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    reader: str = ""  # capture inputs: "ok", "damaged" or "refused"

    def add(self, other: Outcome) -> None:
        self.messages += other.messages
        self.raw_chunks += other.raw_chunks
        self.reencoded += other.reencoded
        self.problems.update(other.problems)


class _Told:
    """A sink checking what the pipeline tells its sinks against what it returns."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def on_message(self, msg: Message) -> None:
        self.messages.append(msg)

    def on_reply(self, request: Message, reply: Message) -> None:
        if (
            request.reply
            or not reply.reply
            or reply.reply_to != request.frame
            or request.reply_in != reply.frame
            or (request.conn, request.channel, request.request)
            != (reply.conn, reply.channel, reply.request)
        ):
            raise InvariantError(
                f"on_reply paired {request.name} (frame {request.frame}) "
                f"with {reply.name} (frame {reply.frame})"
            )


def run_pipeline(frames: Iterable[Frame]) -> list[Message]:
    """Feed every frame, then close: exactly what ``vuinspect read`` does."""
    told = _Told()
    pipeline = Pipeline(sinks=[told])
    out: list[Message] = []
    for frame in frames:
        out.extend(pipeline.feed(frame))
    out.extend(pipeline.close())
    if len(told.messages) != len(out) or any(
        a is not b for a, b in zip(told.messages, out, strict=True)
    ):
        raise InvariantError(f"sinks were told {len(told.messages)} messages, {len(out)} returned")
    return out


def check_frames(frames: list[Frame]) -> Outcome:
    """Run ``frames`` through a Pipeline and check every invariant (raises InvariantError)."""
    messages = run_pipeline(frames)
    sent: dict[tuple[int, Channel, Direction], list[bytes]] = {}
    sent_fds: dict[tuple[int, Channel, Direction], list[str]] = {}
    for f in frames:
        if f.kind == "data":
            key = (f.conn, f.channel, f.direction)
            sent.setdefault(key, []).append(f.data)
            sent_fds.setdefault(key, []).extend(f.fds)
    got: dict[tuple[int, Channel, Direction], list[bytes]] = {}
    got_fds: dict[tuple[int, Channel, Direction], list[str]] = {}
    out = Outcome()
    for m in messages:
        line = summary_line(m)  # what `vuinspect read` and the proxy print must not fail
        if safe_text(line) != line:
            raise InvariantError(f"message {m.index} ({m.name}): raw control text in {line!r}")
        json.dumps(to_json(m))
        if m.is_event or m.kind in DATAPLANE_KINDS:  # not data: ring/notify samples
            continue
        key = (m.conn, m.channel, m.direction)
        got.setdefault(key, []).append(m.raw)
        got_fds.setdefault(key, []).extend(m.fds)
        out.messages += 1
        out.problems.update(m.problem_codes)
        if m.kind == "raw":
            out.raw_chunks += 1
        elif _reencodes(m):
            out.reencoded += 1
    for key in sent.keys() | got.keys():
        a = b"".join(sent.get(key, []))
        b = b"".join(got.get(key, []))
        if a != b:
            raise InvariantError(
                f"{key}: {len(a)} bytes in, {len(b)} bytes out of messages; "
                f"first difference at byte {_first_diff(a, b)}"
            )
        fa, fb = sent_fds.get(key, []), got_fds.get(key, [])
        if len(fa) != len(fb) or any(not d.endswith(s) for s, d in zip(fa, fb, strict=True)):
            raise InvariantError(
                f"{key}: fds in {fa[:8]}... ({len(fa)}), out {fb[:8]}... ({len(fb)})"
            )
    return out


def _reencodes(m: Message) -> bool:
    """Check encode(decode(payload)) == payload for a well-formed message; False if skipped."""
    if m.kind != "message" or m.layout is None:
        return False
    if any(code in NOT_WELL_FORMED for code in m.problem_codes):
        return False
    layout = LAYOUTS.get(m.layout)
    if layout is None:
        raise InvariantError(f"message {m.index}: layout {m.layout!r} is not in ALL_LAYOUTS")
    payload = m.raw[HEADER_SIZE:]
    try:
        again = encode_layout(layout, m.payload, m.order)
    except Exception as exc:  # the encoder must take the decoder's own dicts
        raise InvariantError(
            f"message {m.index} ({m.name}, layout {m.layout}): re-encoding "
            f"raised {exc!r}; payload {payload.hex()}"
        ) from exc
    if again != payload:
        raise InvariantError(
            f"message {m.index} ({m.name}, layout {m.layout}): re-encoded "
            f"{again.hex()} != {payload.hex()}"
        )
    return True


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def read_capture_bytes(data: bytes) -> tuple[str, list[Frame], CaptureReader | None]:
    """Read a capture held in memory: ("refused" | "damaged" | "ok", frames, reader).

    CaptureFormatError is the reader's documented way to say "not ours", at
    open or before the first frame of ours; any other exception escapes.
    """
    try:
        reader = CaptureReader(io.BytesIO(data), chunk_size=4096)
    except CaptureFormatError:
        return "refused", [], None
    frames: list[Frame] = []
    try:
        for frame in reader:
            frames.append(frame)
    except CaptureFormatError:
        if frames:
            raise InvariantError("CaptureFormatError after frames were read") from None
        return "refused", [], reader
    return ("damaged" if reader.error is not None else "ok"), frames, reader


def check_index(data: bytes, frames: list[Frame], status: str) -> None:
    """The random-access index (the TUI's reader) must agree with the streaming reader."""
    fd, path = tempfile.mkstemp(
        prefix="vuinspect-fuzz-",
        suffix=".pcapng",
        dir="/dev/shm" if os.path.isdir("/dev/shm") else None,
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not data:
            return  # by design the index takes an empty file as a live capture not yet started
        try:
            index = build_index(path)
        except CaptureFormatError:
            if status != "refused":
                raise InvariantError(f"index refused what the reader read ({status})") from None
            return
        with index:
            if status == "refused":
                raise InvariantError("the reader refused what the index accepted")
            # The index checks framing only and reads the rest of a frame on demand, so it
            # may list frames past the damage that stopped the reader; those raise CaptureError.
            if len(index) < len(frames):
                raise InvariantError(
                    f"index has {len(index)} frames, the reader {len(frames)}; "
                    f"index error {index.error!r}"
                )
            for i in range(len(index)):
                try:
                    frame = index.frame(i)
                except CaptureError:
                    if i < len(frames):
                        raise InvariantError(
                            f"index frame {i} is damaged, the reader read it"
                        ) from None
                    continue
                if i < len(frames) and frame != frames[i]:
                    raise InvariantError(f"index frame {i} differs from the reader's")
    finally:
        os.unlink(path)


def check_capture_bytes(
    data: bytes, *, prefix_of: list[Frame] | None = None, index: bool = False
) -> Outcome:
    """Read ``data`` as a capture, check the reader's contract, then the pipeline's.

    ``prefix_of``: for an input that is a cut of a good capture, the frames of
    the whole capture; what was read must be their beginning.  ``index``: also
    build a :class:`~vuinspect.capture.CaptureIndex` and compare.
    """
    status, frames, reader = read_capture_bytes(data)
    if index:
        check_index(data, frames, status)
    if (
        reader is not None
        and reader.error is not None
        and reader.error.offset is not None
        and not 0 <= reader.error.offset <= len(data)
    ):
        raise InvariantError(f"error offset {reader.error.offset} outside the {len(data)} bytes")
    if prefix_of is not None and frames != prefix_of[: len(frames)]:
        raise InvariantError("a cut capture gave frames that are not a prefix of the original")
    out = check_frames(frames)
    out.reader = status
    return out
