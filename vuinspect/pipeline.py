"""The one flow: frames in, decoded messages out, for live proxying and offline reading.

``Pipeline.feed(frame)`` routes data frames to the framer of their
(connection, channel, direction) and the resulting messages through the
connection's :class:`~vuinspect.session.Session`; event frames open and close
sessions.  The proxy and the capture reader both feed it; the CLI, the TUI and
the statistics read what it returns and the sessions it keeps.

Consumers that want to be told rather than poll are *sinks* (mitmproxy's
addons, without a global context): any object with some of ``on_message(msg)``,
``on_reply(request, reply)`` and ``on_close(session)``, given to
``Pipeline(sinks=[...])`` or :meth:`Pipeline.add_sink`.  Whether a request is
still owed a reply is asked with :meth:`Pipeline.owes_reply`; nothing outside
the pipeline and the session reads the session's pairing queues.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import rule_steps
from .decoder import StreamFramer
from .frames import DATAPLANE_KINDS, Channel, Direction, Frame, event_info
from .message import Message
from .protocol.problems import problem
from .session import Session


class Pipeline:
    """Decode a stream of frames from any number of connections.

    ``keep_closed``: True keeps every closed session (``read``, the TUI on a
    file: statistics and state after the close); False drops a session once its
    close is handled (the proxy's printers, which run for days); a number keeps
    that many most recently closed ones (the live TUI), so memory is bounded by
    the connections open at once, not by how many came and went.
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        keep_closed: bool | int = True,
        sinks: Iterable[Any] = (),
    ) -> None:
        self.device = device
        self.keep_closed = keep_closed
        self.sessions: dict[int, Session] = {}
        self._closed: OrderedDict[int, None] = OrderedDict()  # kept closed conns, oldest first
        self._on_message: list[Callable[[Message], object]] = []
        self._on_reply: list[Callable[[Message, Message], object]] = []
        self._on_close: list[Callable[[Session], object]] = []
        for sink in sinks:
            self.add_sink(sink)
        # conn -> {(channel, direction): framer}: a close touches only its own connection's
        # framers, so reading N connections stays linear (issue 11 item 8).  Only framers
        # holding bytes stay; an idle one holds nothing and goes back to ``_idle``, one per
        # (channel, byte order), so a connection between messages costs no framer.
        self._framers: dict[int, dict[tuple[Channel, Direction], StreamFramer]] = {}
        self._idle: dict[tuple[Channel, str], StreamFramer] = {}
        self.frames = 0
        self.messages = 0
        self._decode_cache: dict[tuple, tuple] = {}
        self._steps = rule_steps.table()  # what each request does, shared by the sessions

    def add_sink(self, sink: Any) -> None:
        """Call ``sink``'s hooks from now on (only those it has, in the order sinks were added).

        ``on_message(msg)``: every message and event :meth:`feed` and :meth:`close`
        return, in order.  ``on_reply(request, reply)``: a reply was paired with its
        request (before the reply's ``on_message``; the request may be from any
        earlier frame).  ``on_close(session)``: a connection's main channel closed
        (after the close event's ``on_message``); then the session is dropped
        unless ``keep_closed`` keeps it.
        """
        for name, hooks in (
            ("on_message", self._on_message),
            ("on_reply", self._on_reply),
            ("on_close", self._on_close),
        ):
            hook = getattr(sink, name, None)
            if hook is not None:
                hooks.append(hook)

    # -- queries ---------------------------------------------------------------------
    def owes_reply(self, msg: Message, *, optional: bool = False) -> bool:
        """Is ``msg`` a request still waiting for its reply on an open connection?

        With ``optional`` also a request whose reply may still come but is not
        required (NEED_REPLY without REPLY_ACK): its ``reply_in`` may yet change.
        O(1) for the oldest and the newest waiting request (``read``'s and the
        TUI's questions), so a peer that never answers costs no quadratic time.
        """
        if msg.reply or msg.kind != "message" or msg.reply_in is not None:
            return False
        session = self.sessions.get(msg.conn)
        if session is None or session.closed_ns is not None:
            return False
        queue = session.waits(msg.channel)
        if not queue or not queue[0].message.index <= msg.index <= queue[-1].message.index:
            return False
        for end in (queue[-1], queue[0]):
            if end.message is msg:
                return end.expected or optional
        entry = next((p for p in queue if p.message is msg), None)
        return entry is not None and (entry.expected or optional)

    def owed(self, conn: int | None = None) -> list[Message]:
        """Requests still waiting for a reply (required or optional), oldest first per
        connection; of one connection, or of all kept ones."""
        sessions = self.sessions.values() if conn is None else [self.sessions.get(conn)]
        return [p.message for s in sessions if s is not None for p in s.waiting()]

    def session(self, conn: int) -> Session:
        s = self.sessions.get(conn)
        if s is None:
            s = self.sessions[conn] = Session(
                conn, device=self.device, cache=self._decode_cache, steps=self._steps
            )
        return s

    def feed(self, frame: Frame, *, number: int | None = None) -> list[Message]:
        """Take one frame; return the messages it completed (possibly none).

        ``number``: the frame's number in its capture, when not every frame is
        fed (a replay of one connection); frames after it count on from there.
        """
        return list(self.feed_iter(frame, number=number))

    def feed_iter(self, frame: Frame, *, number: int | None = None) -> Iterator[Message]:
        """:meth:`feed`, one message at a time (a packet may hold millions of them).

        Consume it to the end before the next frame.
        """
        self.frames = self.frames + 1 if number is None else number
        number = self.frames
        if frame.kind != "data":
            events = self._event(frame, number)
            if frame.comment:
                events[-1].comment = frame.comment  # (the event itself, after any flush)
            if self._on_message:
                self._tell(events)
            if frame.kind == "close" and frame.channel == "main":
                self._closed_session(frame.conn)
            yield from events
            return
        session = self.sessions.get(frame.conn) or self.session(frame.conn)
        framers = self._framers.get(frame.conn)
        if framers is None:
            framers = self._framers[frame.conn] = {}
        key = (frame.channel, frame.direction)
        framer = framers.get(key)
        if framer is None:  # (kept while its frame is consumed: a stop midway leaves it here)
            order = _stream_order(session, frame.channel, frame.direction)
            framer = self._idle.pop((frame.channel, order), None)
            if framer is None:
                framer = StreamFramer(frame.channel, order)
            framers[key] = framer
        if frame.truncated:
            raws: Iterable[Any] = framer.feed_cut(
                frame.data, frame.fds, frame.ts_ns, number, frame.truncated
            )
        else:
            raws = framer.feed_iter(frame.data, frame.fds, frame.ts_ns, number)
        comment, tell = frame.comment, self._on_message
        for raw in raws:
            if self._on_reply:
                msg = self._handle(session, raw, frame.direction, frame.channel)
            else:  # (the common case, no call in between)
                self.messages += 1
                msg = session.handle(raw, self.messages, frame.direction, frame.channel)
            if comment:  # the capture's comment on the frame (editcap -a): its messages
                msg.comment = comment
            if tell:
                for hook in tell:
                    hook(msg)
            yield msg
        if frame.data and not framer.pending:
            # Idle: every byte became a message, and with it every fd (a framer holds fds
            # without bytes only after a frame of none), so nothing of this stream is left.
            del framers[key]
            if not framers:
                del self._framers[frame.conn]
            self._idle[(frame.channel, framer.order)] = framer

    def _handle(
        self, session: Session, raw: Any, direction: Direction, channel: Channel
    ) -> Message:
        """One framed message through its session, with ``on_reply`` sinks: told when it
        paired a request."""
        self.messages += 1
        msg = session.handle(raw, self.messages, direction, channel)
        if msg.reply_to is not None:  # it paired a request: the one the session just took
            request = session.paired
            assert request is not None  # (set with reply_to)
            for hook in self._on_reply:
                hook(request, msg)
        return msg

    def _tell(self, msgs: list[Message]) -> None:
        for msg in msgs:
            for hook in self._on_message:
                hook(msg)

    def _closed_session(self, conn: int) -> None:
        """After a main-channel close: tell the sinks, then keep or drop the session."""
        session = self.sessions.get(conn)
        if session is None:
            return
        for hook in self._on_close:
            hook(session)
        keep = self.keep_closed
        if keep is True:
            return
        self._closed[conn] = None
        self._closed.move_to_end(conn)
        while len(self._closed) > int(keep):
            old, _ = self._closed.popitem(last=False)
            gone = self.sessions.get(old)
            if gone is not None and gone.closed_ns is not None:
                self.forget(old)

    def forget(self, conn: int) -> None:
        """Drop a connection's session and partial messages (its frames will not come back:
        a consumer that sees only part of the stream and knows the connection ended)."""
        self.sessions.pop(conn, None)
        self._framers.pop(conn, None)
        self._closed.pop(conn, None)

    def _event(self, frame: Frame, number: int) -> list[Message]:
        info = event_info(frame)
        out: list[Message] = []
        session = self.session(frame.conn)
        if frame.kind == "open":
            session.on_open(frame.ts_ns, info)
        elif frame.kind == "close" and frame.channel == "backend":
            out.extend(self._flush_conn(frame.conn, "backend"))
            session.backend_channel = "closed"
        elif frame.kind == "close":
            out.extend(self._flush_conn(frame.conn))
            session.on_close(frame.ts_ns, str(info.get("reason", "closed")))
        elif frame.kind == "note":
            session.on_note(info)
        elif frame.kind in DATAPLANE_KINDS:
            out.append(self._dataplane(frame, number, info, session))
            return out
        self.messages += 1
        ev = event_message(frame, number, self.messages, info)
        if frame.kind == "close" and frame.channel == "main":
            ev.problems.extend(session.rings_stopped(frame.ts_ns, final=True))
        out.append(ev)
        return out

    def _dataplane(self, frame: Frame, number: int, info: dict, session: Session) -> Message:
        """A ``ring`` or ``notify`` frame as a message: its JSON is the payload.

        A ring message carries the sample's problems and the diagnoses it
        raises; ``payload.resolved`` lists the diagnoses it ends (with
        ``duration_ns``).
        """
        self.messages += 1
        msg = event_message(frame, number, self.messages, info)
        if frame.kind == "ring":
            problems, ended = session.on_ring(frame.ts_ns, info)
            if ended:
                msg.payload["resolved"] = [
                    {
                        "code": f.code,
                        "since_ns": f.since_ns,
                        "until_ns": f.until_ns,
                        "duration_ns": f.duration_ns,
                        "resolution": f.resolution,
                        "text": f.text,
                    }
                    for f in ended
                ]
        else:
            problems = session.on_notify(frame.ts_ns, info)
        msg.problems = problems
        return msg

    def _flush_conn(self, conn: int, channel: str | None = None) -> list[Message]:
        """End a connection's streams (of one ``channel``, or all): what they hold becomes
        messages, in the order the streams began; the next bytes start afresh."""
        session = self.sessions.get(conn)
        if session is None or not session.framing:
            return []
        framers = self._framers.get(conn, {})
        out = []
        kept = []
        for entry in session.framing:
            if channel not in (None, entry[0]):
                kept.append(entry)
                continue
            framer = framers.pop((entry[0], entry[1]), None)
            if framer is not None:  # (an idle stream holds nothing)
                for raw in framer.close():
                    out.append(self._handle(session, raw, entry[1], entry[0]))
        session.framing = _shared(tuple(kept))
        if not framers:
            self._framers.pop(conn, None)
        return out

    def close(self) -> list[Message]:
        """End of input: report partial messages and requests still unanswered."""
        out = []
        for conn in list(self.sessions):
            out.extend(self._flush_conn(conn))
        for s in self.sessions.values():
            if s.closed_ns is None:
                for p in s.owed():
                    p.message.problems.append(
                        problem("missing_reply", "capture ended before the reply")
                    )
        if self._on_message:
            self._tell(out)
        return out

    def run(self, frames: Iterable[Frame]) -> Iterator[Message]:
        """Decode a whole stream of frames, ending with :meth:`close`."""
        for frame in frames:
            yield from self.feed_iter(frame)
        yield from self.close()


#: The framing tuples sessions share (a handful of values: 4 streams, 2 byte orders).
_FRAMINGS: dict[tuple, tuple] = {}


def _shared(framing: tuple) -> tuple:
    known = _FRAMINGS.get(framing)
    if known is None:
        known = framing
        if len(_FRAMINGS) < 4096:  # (bounded whatever comes)
            _FRAMINGS[framing] = framing
    return known


def _stream_order(session: Session, channel: Channel, direction: Direction) -> str:
    """The byte order a stream is framed in: the session's when its first bytes came (an
    open frame naming another order later does not change a stream begun)."""
    for ch, d, order in session.framing:
        if ch == channel and d == direction:
            return order
    session.framing = _shared((*session.framing, (channel, direction, session.order)))
    return session.order


def event_message(frame: Frame, number: int, index: int, info: dict | None = None) -> Message:
    """The message an open/close/note/ring/notify frame becomes, before session state.

    Events keep their JSON as ``info``; a ring or notify record's JSON (a copy) is its
    payload.  The pipeline adds what the session knows; the TUI rebuilds rows with it.
    """
    if info is None:
        info = event_info(frame)
    record = frame.kind in DATAPLANE_KINDS
    return Message(
        index,
        number,
        frame.ts_ns,
        frame.conn,
        frame.channel,
        frame.direction,
        kind=frame.kind,
        name=frame.kind.upper(),
        payload=dict(info) if record else {},
        info={} if record else info,
        raw=frame.data,
    )


def linked(pipeline: Pipeline, frames: Iterable[Frame]) -> Iterator[Message]:
    """Decode ``frames`` in order, holding each request back until its reply is seen,
    so that its ``reply_in`` is final when it is yielded (as ``read`` prints it)."""
    held: deque[Message] = deque()
    waits = pipeline.owes_reply
    for msg in pipeline.run(frames):
        held.append(msg)
        while held and not waits(held[0], optional=True):  # its reply_in may still change
            yield held.popleft()
    yield from held
