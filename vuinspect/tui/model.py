"""The TUI's view of a capture: one row per frame, compact columns, messages rebuilt on demand.

A million-message capture must open in under two seconds and stay small, so
nothing here holds a decoded message per row.  One background thread feeds
every frame through the real :class:`~vuinspect.pipeline.Pipeline` (so the
sessions, pairing and problems are exactly ``vuinspect read``'s) and keeps, per
frame, only what the session alone knows: flags, the paired frame, the
latency, the decode context, and the problems of the rare rows that have some.
Rows the thread has not reached yet are still painted, from the frame alone
(:func:`~vuinspect.tui.redecode.quick_decode`).  Rows are frames, as in
Wireshark: ``reply_to``/``reply_in`` are frame numbers, so "jump to reply" is
one lookup.  A frame that does not hold exactly one whole message (a message
split over frames, several in one, a framing loss) keeps its decoded messages.

No Textual here: the model is driven by tests and the benchmark directly.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vuinspect.fields import KINDS  # a row stores its kind as the index here
from vuinspect.filter import compile_filter, first_match
from vuinspect.frames import DATAPLANE_KINDS, Frame
from vuinspect.message import Message
from vuinspect.payload import DecodeContext
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.problems import Problem
from vuinspect.session import Session

from .queues_data import RingRows
from .ranking import Ranking
from .redecode import decode_frame, event_message, quick_decode
from .sources import Source

KIND_CODE = {k: i for i, k in enumerate(KINDS)}
RING_CODE = KIND_CODE["ring"]  # ring and notify: the codes from here up
# row flag bits (array 'H'); bits 0-2 hold the kind code
REPLY = 1 << 3
NEED_REPLY = 1 << 4
PROBLEM = 1 << 5
PENDING = 1 << 6  # a request still owed a reply
ODD = 1 << 7  # the frame's messages are kept whole in Model.odd
EMPTY = 1 << 8  # the frame completed no message (first part of a split one)

#: closed connections a live view keeps (their state, problems, Connections row);
#: older ones are dropped so a proxy that runs for days stays small
LIVE_KEEP_CLOSED = 64
#: What a filter names when it reads a message's problems (``problems``, its old names
#: ``problem``/``problem_codes``, and ``severity``, the worst of them): a problem the
#: session adds to an earlier row later (no reply came) re-runs such a filter there.
_PROBLEM_WORDS = ("problem", "severity")
BATCH_FRAMES = 2000
BATCH_SECONDS = 0.05
NaN = float("nan")

Predicate = Callable[[Message], bool]


class Model:
    """Rows, columns and sessions of one source; decoded by :meth:`start`'s thread.

    The model is a sink of its pipeline: replies and closes reach it as
    ``on_reply``/``on_close``, whatever frame they come from.
    """

    def __init__(
        self, source: Source, *, device: str | None = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.source = source
        self.device = device
        self.clock = clock
        self.pipeline = Pipeline(
            device=device,
            keep_closed=LIVE_KEEP_CLOSED if source.live else True,
            sinks=[self],
        )
        self.lock = threading.RLock()  # the pipeline and sessions; held per batch
        self.bits = array("H")
        self.link = array("I")  # frame number of the paired request/reply, 0 = none
        self.latency = array("d")  # µs, NaN = none
        self.ctx = array("B")
        self.contexts: list[DecodeContext] = []
        self._ctx_ids: dict[tuple[Any, ...], int] = {}
        self._last_ctx: dict[int, int] = {}
        self.problems: dict[int, tuple[Problem, ...]] = {}
        self._interned: dict[Problem, Problem] = {}
        self.odd: dict[int, list[Message]] = {}
        self._fix_rows: list[int] = []  # message index = row + 1 + delta from here on
        self._fix_delta: list[int] = []
        self.decoded = 0
        self._frames: Iterator[Frame] | None = None  # the decoder's sequential frame reader
        self._frames_at = 0
        self.finished = False  # the end of input has been processed (Pipeline.close)
        self.error: str | None = None
        # filtering: visible rows in order, evaluated for rows [0, filtered)
        self.filter_text = ""
        self._filter: Predicate | None = None
        self.visible: array | None = None
        self.filtered = 0
        self.generation = 0  # bumped whenever rows change meaning (filter) for caches
        # ring/notify rows: off in the list unless shown (R), except those that raise or
        # resolve a problem (dataplane.text.in_message_list; _routine is its bits-only twin)
        self.show_rings = False
        self.rings_seen = False
        self.rings = RingRows(self.pipeline.sessions)  # (as long as the pipeline keeps them)
        #: the sessions in the Connections/State views' order; each frame marks its connection
        self.ranking = Ranking(self.pipeline.sessions)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new filter (or stop) once the input has ended
        self._on_change: Callable[[], None] | None = None
        self.comments: dict[int, str] = {}  # frame comments added in the TUI ('' removes one)

    # -- the decoding thread ---------------------------------------------------------
    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Decode in a daemon thread; ``on_change`` is called (from it) after each batch."""
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="vuinspect-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.step():
                    continue
                if self.finished:  # the input has ended: only a new filter brings work
                    self._wake.wait()
                    self._wake.clear()
                else:
                    self.source.wait(self.decoded, 0.25)
        except Exception as exc:  # noqa: BLE001 - shown in the UI instead of a dead thread
            self.error = f"decoding stopped: {exc!r}"
            if self._on_change:
                self._on_change()

    def step(self, max_frames: int = BATCH_FRAMES) -> bool:
        """Do one batch of work (filter backlog, new frames, end of input); False when idle."""
        did = False
        with self.lock:
            if self._narrow and self.filtered < self.decoded:
                self._filter_backlog(max_frames)
                did = True
            elif self.decoded < len(self.source):
                self._decode_batch(max_frames)
                did = True
            elif self.source.ended and not self.finished:
                self._finish()
                did = True
        if did and self._on_change:
            self._on_change()
        return did

    def run_to_end(self) -> None:
        """Decode everything there is now, in this thread (tests, benchmark, saving)."""
        while True:
            if not self.step(50_000):
                if not self.source.loading:
                    return
                self.source.wait(self.decoded, 0.05)

    def _decode_batch(self, max_frames: int) -> None:
        deadline = time.perf_counter() + BATCH_SECONDS
        end = min(len(self.source), self.decoded + max_frames)
        feed = self.pipeline.feed
        sessions = self.pipeline.sessions  # (read only: the decode context of a conn)
        touched = self.ranking.dirty
        if self._frames is None or self._frames_at != self.decoded:
            self._frames = self.source.frames_from(self.decoded)
            self._frames_at = self.decoded
        for i in range(self.decoded, end):
            frame = next(self._frames, None)
            if frame is None:  # the reader ended early (damage): fall back to the index
                self._frames = iter(())
                frame = self.source.frame(i)
            self._frames_at = i + 1
            touched[frame.conn] = None
            session = sessions.get(frame.conn)
            ctx = self._ctx_id(
                session.context() if session is not None else DecodeContext(device=self.device)
            )
            self._store(i, frame, feed(frame), ctx)
            if i & 63 == 0 and time.perf_counter() > deadline:
                break

    def _finish(self) -> None:
        owed = self.pipeline.owed()
        for msg in self.pipeline.close():
            self._attach(msg.frame - 1, msg)
        self._sync(owed)
        self.ranking.touch_all()
        self.finished = True

    def _ctx_id(self, ctx: DecodeContext) -> int:
        key = (ctx.order, ctx.device, ctx.packed, ctx.xen_mmap)
        cid = self._ctx_ids.get(key)
        if cid is None:
            cid = self._ctx_ids[key] = len(self.contexts)
            self.contexts.append(ctx)
        return cid

    def _intern(self, problems: list[Problem]) -> tuple[Problem, ...]:
        return tuple(self._interned.setdefault(p, p) for p in problems)

    def _store(self, row: int, frame: Frame, msgs: list[Message], ctx: int) -> None:
        number = row + 1
        mine = [m for m in msgs if m.frame == number]
        for other in msgs:
            if other.frame != number:
                self._attach(other.frame - 1, other)
        self.ctx.append(ctx)
        self._last_ctx[frame.conn] = ctx
        m = mine[0] if len(mine) == 1 else None
        if frame.kind in DATAPLANE_KINDS:
            self._ring_row(row, frame, m)
        if (
            m is not None
            and m.kind != "raw"
            and (m.is_event or m.raw == frame.data)
            and not (m.kind == "ring" and "resolved" in m.payload)
        ):  # kept whole: odd
            bits = KIND_CODE[m.kind]
            if m.reply:
                bits |= REPLY
            if m.need_reply:
                bits |= NEED_REPLY
            if m.problems:
                bits |= PROBLEM
                self.problems[row] = self._intern(m.problems)
            if not m.is_event and not m.reply and self.pipeline.owes_reply(m):
                bits |= PENDING
            self.bits.append(bits)
            self.link.append(m.reply_to or 0)
            self.latency.append(NaN if m.latency_us is None else m.latency_us)
            delta = m.index - number
            if delta != (self._fix_delta[-1] if self._fix_delta else 0):
                self._fix_rows.append(row)
                self._fix_delta.append(delta)
        else:
            self.odd[row] = mine
            bits = ODD | (EMPTY if not mine else 0)
            if any(x.problems for x in mine):
                bits |= PROBLEM
            self.bits.append(bits)
            self.link.append(0)
            self.latency.append(NaN)
        self.decoded = number
        if self._narrow and self.filtered == row:
            self.visible_append(row, mine)

    def _ring_row(self, row: int, frame: Frame, m: Message | None) -> None:
        """A ring/notify frame: note it for the Queues view; start hiding routine ones."""
        if not self.rings_seen:
            self.rings_seen = True
            if not self.show_rings and self._filter is None:  # every earlier row is shown
                self.visible = array("I", range(row))
                self.filtered = row
                self.generation += 1
        if m is not None and m.kind == "ring":
            session = self.pipeline.sessions.get(frame.conn)
            if session is not None:
                self.rings.note(session, row, m)

    # -- the pipeline's sink hooks (called from feed, before the frame's row is stored) --------
    def on_reply(self, request: Message, reply: Message) -> None:
        """A reply arrived: record the link on the request's row."""
        self._paired(request.frame - 1, reply.frame)

    def on_close(self, session: Session) -> None:
        """A connection closed: its unanswered requests are owed nothing now (a problem each)."""
        self._sync(self.pipeline.owed(session.conn))

    def _paired(self, row: int, reply_frame: int) -> None:
        """A reply arrived for the request in ``row``: record the link on the request."""
        if row < 0 or row >= len(self.link) or self.bits[row] & ODD:
            return  # odd rows keep Message objects, which the session updated itself
        self.link[row] = reply_frame
        self.bits[row] &= ~PENDING
        if self._filter is not None and "reply" in self.filter_text:
            self._refilter(row)

    def _attach(self, row: int, msg: Message) -> None:
        """A message for an earlier frame (flushed at a close or at the end of input)."""
        if row < 0 or row >= self.decoded:
            return
        if not self.bits[row] & ODD:
            self.odd[row] = self.messages(row)
            self.bits[row] |= ODD
        self.odd[row].append(msg)
        self.bits[row] &= ~EMPTY
        if msg.problems:
            self.bits[row] |= PROBLEM
        self._refilter(row)

    def _sync(self, msgs: list[Message]) -> None:
        """Requests that will get no reply (their connection or the input ended): not
        pending any more, with the problem the session added."""
        for m in msgs:
            row = m.frame - 1
            if row < 0 or row >= self.decoded:
                continue
            self.bits[row] &= ~PENDING
            if self.bits[row] & ODD:
                if m.problems:
                    self.bits[row] |= PROBLEM
            elif m.problems:
                self.bits[row] |= PROBLEM
                self.problems[row] = self._intern(m.problems)
            if self._filter is not None and any(w in self.filter_text for w in _PROBLEM_WORDS):
                self._refilter(row)

    # -- reading rows ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Rows in the current view (the filtered ones, or every frame)."""
        visible = self.visible
        return len(visible) if visible is not None else len(self.source)

    def row_at(self, pos: int) -> int:
        """The frame row shown at view position ``pos``."""
        visible = self.visible
        return visible[pos] if visible is not None else pos

    def shown_rows(self) -> Sequence[int]:
        """Every row of the view now, in order: a range or a copy made at C speed (a live
        view of millions of rows is saved without a Python loop on the UI thread)."""
        visible = self.visible
        return visible[:] if visible is not None else range(len(self.source))

    def position_of(self, row: int) -> int | None:
        """The view position of frame row ``row``, or None when filtered out."""
        visible = self.visible
        if visible is None:
            return row if 0 <= row < len(self.source) else None
        pos = bisect_left(visible, row)
        return pos if pos < len(visible) and visible[pos] == row else None

    def nearest_position(self, row: int) -> int:
        visible = self.visible
        if visible is None:
            return row
        return max(0, min(len(visible) - 1, bisect_left(visible, row)))

    def is_decoded(self, row: int) -> bool:
        return row < self.decoded

    def frame(self, row: int) -> Frame:
        return self.source.frame(row)

    def comment(self, row: int) -> str | None:
        """The frame's comment: one set in the TUI, else the capture's (pcapng ``opt_comment``)."""
        if row in self.comments:
            return self.comments[row] or None
        return getattr(self.source.frame(row), "comment", None)

    def messages(self, row: int) -> list[Message]:
        """The messages of frame row ``row``, rebuilt (the same as the pipeline made them)."""
        odd = self.odd.get(row)
        if odd is not None:
            return list(odd)
        frame = self.source.frame(row)
        number = row + 1
        if row >= self.decoded:
            cid = self._last_ctx.get(frame.conn)
            ctx = self.contexts[cid] if cid is not None else DecodeContext(device=self.device)
            return quick_decode(frame, number, ctx)
        bits = self.bits[row]
        i = bisect_right(self._fix_rows, row) - 1
        index = number + (self._fix_delta[i] if i >= 0 else 0)
        if frame.kind != "data":
            msg = event_message(frame, number, index)
        else:
            msg = decode_frame(
                frame.data, frame.fds, frame, number, index, self.contexts[self.ctx[row]]
            )
        if bits & PROBLEM:
            msg.problems = list(self.problems.get(row, ()))
        link = self.link[row]
        if msg.reply:
            if link:
                msg.reply_to = link
                lat = self.latency[row]
                msg.latency_us = None if math.isnan(lat) else lat
        elif link:
            msg.reply_in = link
        return [msg]

    def message(self, row: int) -> Message | None:
        msgs = self.messages(row)
        return msgs[0] if msgs else None

    def row_of_frame(self, number: int) -> int | None:
        row = number - 1
        return row if 0 <= row < len(self.source) else None

    def pending(self, row: int) -> bool:
        return row < self.decoded and bool(self.bits[row] & PENDING)

    # -- filtering ---------------------------------------------------------------------------
    def set_filter(self, text: str) -> None:
        """Show only rows with a message matching ``text``; raises FilterError, keeps the old one."""
        pred = compile_filter(text) if text.strip() else None
        with self.lock:
            self.filter_text = text.strip()
            self._filter = pred
            self._restart_pass()
        self._changed()

    @property
    def filtering(self) -> bool:
        """A filter is set and has not yet seen every decoded row."""
        return self._narrow and self.filtered < self.decoded

    @property
    def _narrow(self) -> bool:
        """Some rows are left out: a filter is set, or routine ring/notify rows are hidden."""
        return self._filter is not None or self.hiding_rings

    @property
    def hiding_rings(self) -> bool:
        return self.rings_seen and not self.show_rings

    def set_show_rings(self, show: bool) -> None:
        """Show every ring/notify row in the list (True) or only those with a problem."""
        with self.lock:
            self.show_rings = show
            self._restart_pass()
        self._changed()

    def _restart_pass(self) -> None:
        """(Under the lock) which rows are visible is decided anew from the first row."""
        self.visible = array("I") if self._narrow else None
        self.filtered = 0
        self.generation += 1

    def _changed(self) -> None:
        self._wake.set()
        if self._on_change:
            self._on_change()

    def _routine(self, row: int) -> bool:
        """A ring/notify row that raises and resolves nothing (hidden unless shown)."""
        bits = self.bits[row]
        return not bits & (ODD | PROBLEM) and bits & 7 >= RING_CODE

    def _keep(self, row: int, msgs: list[Message] | None = None) -> bool:
        if self.hiding_rings and self._routine(row):
            return False
        if self._filter is None:
            return True
        return self._match(self.messages(row) if msgs is None else msgs)

    def _match(self, msgs: list[Message]) -> bool:
        pred = self._filter
        return pred is None or first_match(pred, msgs) is not None

    def visible_append(self, row: int, msgs: list[Message] | None) -> None:
        if self._keep(row, msgs):
            assert self.visible is not None
            self.visible.append(row)
        self.filtered = row + 1

    def _filter_backlog(self, max_rows: int) -> None:
        deadline = time.perf_counter() + BATCH_SECONDS
        end = min(self.decoded, self.filtered + max_rows)
        for row in range(self.filtered, end):
            self.visible_append(row, None)
            if row & 63 == 0 and time.perf_counter() > deadline:
                break

    def _refilter(self, row: int) -> None:
        visible = self.visible
        if not self._narrow or visible is None or row >= self.filtered:
            return
        match = self._keep(row)
        pos = bisect_left(visible, row)
        present = pos < len(visible) and visible[pos] == row
        if match and not present:
            visible.insert(pos, row)
        elif present and not match:
            del visible[pos]

    # -- sessions ------------------------------------------------------------------------------
    def now_ns(self) -> int:
        """'Now' for ages: the wall clock live, the last frame's time in a capture."""
        if self.source.live and not self.source.ended:
            return self.clock()
        n = len(self.source)
        return self.source.frame(n - 1).ts_ns if n else 0

    def sessions(self) -> list[Session]:
        """The sessions so far (hold ``model.lock`` while reading their contents)."""
        with self.lock:
            return list(self.pipeline.sessions.values())

    def state_at(
        self, conn: int, row: int, cancel: threading.Event | None = None
    ) -> Session | None:
        """Connection ``conn`` as it was right after frame row ``row`` (a fresh replay).

        Only that connection's frames are decoded (sessions are independent),
        so this costs a read of the rows before ``row`` and a decode of its own.
        """
        pipeline = Pipeline(device=self.device)
        for i, frame in enumerate(self.source.frames_from(0)):
            if i > row or (cancel is not None and cancel.is_set()):
                break
            if frame.conn == conn:
                pipeline.feed(frame, number=i + 1)  # the capture's frame numbers
        return pipeline.sessions.get(conn)

    def first_ts(self) -> int | None:
        return self.source.frame(0).ts_ns if len(self.source) else None

    def progress(self) -> tuple[int, int]:
        return self.decoded, len(self.source)
