"""The one flow: frames in, decoded messages out, for live proxying and offline reading.

``Pipeline.feed(frame)`` routes data frames to the framer of their
(connection, channel, direction) and the resulting messages through the
connection's :class:`~vuinspect.session.Session`; event frames open and close
sessions.  The proxy and the capture reader both feed it; the CLI, the TUI and
the statistics read what it returns and the sessions it keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .decoder import StreamFramer
from .frames import DATAPLANE_KINDS, Channel, Direction, Frame, event_info
from .message import Message
from .protocol.problems import problem
from .session import Session


class Pipeline:
    """Decode a stream of frames from any number of connections."""

    def __init__(self, *, device: str | None = None, keep_closed: bool = True) -> None:
        self.device = device
        self.keep_closed = keep_closed
        self.sessions: dict[int, Session] = {}
        # conn -> {(channel, direction): framer}: a close touches only its own connection's
        # framers, so reading N connections stays linear (issue 11 item 8).
        self._framers: dict[int, dict[tuple[Channel, Direction], StreamFramer]] = {}
        self.frames = 0
        self.messages = 0
        self._decode_cache: dict[tuple, tuple] = {}

    def session(self, conn: int) -> Session:
        s = self.sessions.get(conn)
        if s is None:
            s = self.sessions[conn] = Session(conn, device=self.device, cache=self._decode_cache)
        return s

    def feed(self, frame: Frame) -> list[Message]:
        """Take one frame; return the messages it completed (possibly none)."""
        self.frames += 1
        number = self.frames
        if frame.kind != "data":
            events = self._event(frame, number)
            if frame.comment:
                events[-1].comment = frame.comment  # (the event itself, after any flush)
            return events
        session = self.session(frame.conn)
        framers = self._framers.get(frame.conn)
        if framers is None:
            framers = self._framers[frame.conn] = {}
        key = (frame.channel, frame.direction)
        framer = framers.get(key)
        if framer is None:
            framer = framers[key] = StreamFramer(frame.channel, session.order)
        out = []
        if frame.truncated:
            raws = framer.feed_cut(frame.data, frame.fds, frame.ts_ns, number, frame.truncated)
        else:
            raws = framer.feed(frame.data, frame.fds, frame.ts_ns, number)
        for raw in raws:
            self.messages += 1
            out.append(session.handle(raw, self.messages, frame.direction, frame.channel))
        if frame.comment:  # the capture's comment on the frame (editcap -a): its messages
            for msg in out:
                msg.comment = frame.comment
        return out

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
        framers = self._framers.get(conn)
        if not framers:
            return []
        out = []
        for key in [k for k in framers if channel in (None, k[0])]:
            framer = framers.pop(key)
            for raw in framer.close():
                self.messages += 1
                out.append(self.session(conn).handle(raw, self.messages, key[1], key[0]))
        if not framers:
            del self._framers[conn]
        return out

    def close(self) -> list[Message]:
        """End of input: report partial messages and requests still unanswered."""
        out = []
        for conn in list(self.sessions):
            out.extend(self._flush_conn(conn))
        for s in self.sessions.values():
            if s.closed_ns is None:
                for p in s.waiting():
                    if p.expected:
                        p.message.problems.append(
                            problem("missing_reply", "capture ended before the reply")
                        )
        return out

    def run(self, frames: Iterable[Frame]) -> Iterator[Message]:
        """Decode a whole stream of frames, ending with :meth:`close`."""
        for frame in frames:
            yield from self.feed(frame)
        yield from self.close()


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
