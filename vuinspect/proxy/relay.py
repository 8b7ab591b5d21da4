"""Relay one socket pair: one thread polls both sockets, one vhost-user message per send.

Why one thread per pair and not one per direction: a vhost-user peer waits for
the reply to its request, so the two directions of a pair take turns.  Two
threads would hand the GIL to each other on every message that carries fds
(each ``close`` of our copy releases it while the reply is already waiting),
which measured +25 µs (1 fd) and +50 µs (8 fds) per round trip against +15 µs
for one polling thread, the design socat uses.

The loop per readable socket is deliberately small: receive a chunk and its
fds, cut it into whole messages (framing.py), hand each to the link's one
FrameSink (sink.py) as a data frame, send it with exactly its own fds, close
our copies.  The frame is handed over *before* the send so that a reply can
never reach the capture ahead of its request; a sink only appends in memory
(the recorder encodes, ~0.5 µs), never blocks, and is bounded in bytes:
writing and decoding happen on other threads or processes.  Sends
never block (``MSG_DONTWAIT``): what does not fit waits in a backlog, and the
socket it came from is not read again until the backlog is written, so
back-pressure reaches the sender exactly as on a direct connection and a full
socket in one direction never stalls the other.  The sockets' own flags are
never changed (a back-end channel socket is shared with QEMU's file table
until QEMU closes its copy).

End of a pair: EOF on one side is passed on as ``shutdown(SHUT_WR)`` on the
other (a half-close, exactly what the reader of a direct connection would
see) once its backlog is written; a full close (the socket shows POLLHUP) is
passed on as a full shutdown.  A stop first forwards what the peers had
already written, then shuts both sockets down; a read or write error shuts
them down at once.  When both directions are done the sockets are closed and
a ``close`` frame with the reason is emitted.

Here: the loop, its fast path and the general path's sending.  Beside it, each
a plain object the link makes and the loop binds once: inbound.py (a reading
side's general path: framing and what its chunks are noted for), backlog.py
(what waits to be sent: room, delays, holds), watch.py (what poll waits for),
ending.py (the first end reason, passing an EOF on, the ``close`` info).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol

from vuinspect.frames import Channel, Direction, Frame, event_frame

from ..protocol.requests import HEADER_SIZE, MAX_MESSAGE, SIZE_OFFSET, FrontendRequest
from .backlog import Backlog, Unsent, send_now
from .ending import DONE, DRAIN, HALF, OPEN, Ended, EndReason, close_info, pass_eof
from .fds import (
    ANC_SIZE,
    RECV_FLAGS,
    SCM_MAX_FD,
    close_all,
    describe_fd,
    discard_unread,
    fds_from_ancdata,
)
from .inbound import Inbound
from .sink import FrameSink, Lane
from .watch import Watch

if TYPE_CHECKING:
    from vuinspect.rules import ConnRules
    from vuinspect.verdict import Verdict

# Plain ints: IntFlag operators cost µs per message.
_DONTWAIT = int(socket.MSG_DONTWAIT)
_RECV_FLAGS = RECV_FLAGS
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_IN = select.POLLIN
_OUT = select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
_READABLE = _IN | _GONE
_SET_BACKEND_REQ_FD = int(FrontendRequest.SET_BACKEND_REQ_FD)  # a plain int on the hot path
_U32 = struct.Struct("=I")

Roles = tuple[str, str]  # role ("frontend"/"backend") of the peer on socks[0], socks[1]


class LinkOwner(Protocol):
    """What a Link needs from the connection it belongs to.

    ``sink`` takes every frame the link makes (sink.py); None: nothing is
    recorded, and data is sent straight from the receive buffer.
    """

    conn: int
    sink: FrameSink | None

    def orient(self, link: Link, side: int) -> Roles: ...
    def intercept(
        self, link: Link, data: bytes, fds: list[int]
    ) -> tuple[list[int], tuple[str, ...]]: ...
    def link_done(self, link: Link, info: dict[str, object]) -> None: ...


def _ignore(frame: Frame) -> None:
    """Where a link's events go when nothing records."""


def _conn_rules(owner: LinkOwner) -> ConnRules | None:
    """The connection's rule matcher (made by its first link), or None without rules."""
    ruleset = getattr(owner, "rules", None) or getattr(
        getattr(owner, "server", None), "rules", None
    )
    if not ruleset:
        return None
    matcher = getattr(owner, "rule_matcher", None)
    if matcher is None:
        matcher = ruleset.for_conn(owner.conn, describe_fd)
        with contextlib.suppress(AttributeError):
            owner.rule_matcher = matcher  # type: ignore[attr-defined]  # optional: cached if it can be
    return matcher


class Link:
    """Two sockets relayed to each other, on one channel of one connection."""

    def __init__(
        self,
        owner: LinkOwner,
        channel: Channel,
        socks: tuple[socket.socket, socket.socket],
        roles: Roles | None,
    ) -> None:
        self.owner = owner
        self.channel = channel
        self.socks = socks
        self.roles = roles
        self._end = EndReason()
        self.thread = threading.Thread(
            target=self._run, daemon=True, name=f"vuinspect-{owner.conn}-{channel}"
        )
        self.threads = [self.thread]
        #: Per reading side: messages (or raw units) forwarded, bytes, fds.
        self.frames = [0, 0]
        self.bytes = [0, 0]
        self.fds = [0, 0]
        # Loop state (owned by the link's thread).
        self._state = [OPEN, OPEN]
        self._backlog = Backlog(socks, self._notes)
        self._out = self._backlog.out  # waiting to go to socks[i]
        self._inbound = (
            Inbound(0, self.role, self._note, self._end),
            Inbound(1, self.role, self._note, self._end),
        )
        self._dirs: list[Direction | None] = [None, None]
        #: Per reading side: must its next chunk take the general path?  (Direction
        #: not known yet, bytes of an incomplete message held, or framing lost.)
        self._slow = [True, True]
        self._sink = owner.sink
        #: Does anything take the frames?  (If not, fds are not even described.)
        self._records = self._sink is not None
        self._emit: Callable[[Frame], None] = (
            self._sink.event if self._sink is not None else _ignore
        )
        self._fileno = (socks[0].fileno(), socks[1].fileno())
        self._watch = Watch(self._fileno, self._state, self._backlog)
        #: Rules of the proxy (rules.py), shared by the connection's links; None: no rules,
        #: and the relay never decodes (the fast path stays as it is).
        self._rules = _conn_rules(owner)
        #: The data plane's hook (dataplane/): sees main-channel front-end messages with
        #: fds before they are sent, dups guest-memory fds; returns other fds to send
        #: instead (--trace-notify's eventfds; the originals are then the hook's) or None.
        self._fd_tap = getattr(owner, "fd_tap", None) if channel == "main" else None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def rules_changed(self) -> None:
        """The run's rules changed (the TUI's intercept set or cleared, holds.py): judge
        from the next message on, or no longer (the fast path again)."""
        self._rules = _conn_rules(self.owner)

    def abort(self, text: str = "proxy stopped") -> None:
        """Stop relaying: forward what the peers had already sent, then close.

        Only the reading side is shut down here: that wakes the thread from
        poll, and the peers cannot add anything, but what they wrote before
        the stop can still be read, and is forwarded (and captured) before the
        pair is closed: a stop never swallows a message that was on its way.
        """
        self._end.note(-1, "proxy", text)
        self._backlog.stopping = True  # what the peers already sent is forwarded, then the end
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RD)

    def _shutdown_all(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def role(self, side: int) -> str:
        if self.roles is None:
            return "listen-side peer" if side == 0 else "connect-side peer"
        return self.roles[side]

    def _read_failed(self, side: int, exc: OSError) -> NoReturn:
        self._end.end(side, "error", f"error reading from {self.role(side)}: {exc.strerror or exc}")

    def _send_failed(self, dst: int, exc: OSError) -> NoReturn:
        self._end.end(dst, "send", f"error sending to {self.role(dst)}: {exc.strerror or exc}")

    # -- the forwarding loop -----------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Ended:
            pass
        except Exception as exc:  # noqa: BLE001 - a bug must not leak fds or hang the peers
            self._end.note(-1, "error", f"proxy error relaying: {exc!r}")
        finally:
            self._shutdown_all()
            self._close()

    def _loop(self) -> None:  # the hot path is kept flat on purpose
        socks = self.socks
        fd0 = self._fileno[0]
        poll = self._watch.poller.poll
        update = self._watch.update
        wait = self._watch.timeout
        state = self._state
        out = self._out
        dirs = self._dirs
        slow = self._slow
        if self.roles is not None:
            dirs[0], dirs[1] = ("f2b", "b2f") if self.roles[0] == "frontend" else ("b2f", "f2b")
            slow[0] = slow[1] = False  # the directions are known: the fast path may be taken
        buf = bytearray(MAX_MESSAGE)
        view = memoryview(buf)
        bufs = [buf]
        recv = (socks[0].recvmsg_into, socks[1].recvmsg_into)
        send = (socks[0].send, socks[1].send)
        now = time.time_ns
        u32 = _U32.unpack_from
        conn = self.owner.conn
        channel = self.channel
        sink = self._sink
        lanes: list[Lane | None] = [None, None]  # the sink's fast path, per reading side
        frames = self.frames
        nbytes = self.bytes
        timeout: int | None = None
        backlog = self._backlog
        held = backlog.held  # messages a delay or a hold keeps back
        registered = self._watch.events  # what each socket waits for (-1: not registered)
        while True:
            events = poll(timeout)
            if held[0]:
                self._release()
                timeout = wait()
            for fd, ev in events:
                if backlog.stopping:
                    self._forward_the_rest(view, bufs)
                side = 0 if fd == fd0 else 1
                dst = 1 - side
                if ev & _OUT or not ev & _READABLE or state[side] != OPEN or out[dst]:
                    self._event(side, ev, view, bufs)
                    timeout = wait()
                    continue
                try:
                    n, anc, flags, _ = recv[side](bufs, ANC_SIZE, _RECV_FLAGS)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._read_failed(side, exc)
                # Fast path: exactly one whole message, nothing held back, no rule that could
                # act on it.  (The kernel echoes MSG_CMSG_CLOEXEC in the flags: only
                # MSG_CTRUNC matters.  n == 12 + size also bounds size: n never exceeds the
                # buffer, MAX_MESSAGE.)
                if (
                    flags & _MSG_CTRUNC
                    or slow[side]
                    or n < HEADER_SIZE
                    or n != HEADER_SIZE + u32(buf, SIZE_OFFSET)[0]
                    or ((rules := self._rules) is not None and rules.wants(channel, u32(buf)[0]))
                ):
                    self._received(side, n, anc, flags, now(), view)
                    timeout = wait()
                    continue
                if anc:
                    self._forward_units(
                        side,
                        now(),
                        dirs[side],  # type: ignore[arg-type]  # set: slow[side] is False
                        [(bytes(view[:n]), fds_from_ancdata(anc))],
                    )
                    update()
                    timeout = None if -1 not in registered else 200
                    continue
                data: bytes | memoryview
                if sink is None:
                    data = view[:n]  # nobody keeps it: send straight from the buffer
                else:
                    data = bytes(view[:n])
                    lane = lanes[side]
                    if lane is None:
                        lane = lanes[side] = sink.lane(conn, channel, dirs[side])  # type: ignore[arg-type]  # set: slow[side] is False
                    lane(now(), data)
                try:
                    sent = send[dst](data, _DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._send_failed(dst, exc)
                frames[side] += 1
                nbytes[side] += n
                if sent != n:
                    out[dst].append(Unsent(memoryview(bytes(data[sent:])), []))
                    update()
                    timeout = None if -1 not in registered else 200

    # -- the slow paths ------------------------------------------------------------
    def _forward_the_rest(self, view: memoryview, bufs: list[bytearray]) -> None:
        """After a stop: forward what is still queued in both sockets (bounded), then end."""
        try:
            for side in (0, 1):
                if self._state[side] != OPEN:
                    continue
                for _ in range(1024):
                    try:
                        n, anc, flags, _ = self.socks[side].recvmsg_into(
                            bufs, ANC_SIZE, _RECV_FLAGS
                        )
                    except OSError:
                        break
                    if not n:
                        if anc:
                            close_all(fds_from_ancdata(anc))
                        break
                    self._received(side, n, anc, flags, time.time_ns(), view)
            for dst in (0, 1):
                if self._out[dst]:
                    self._flush(dst)  # what fits now; the rest is dropped with the pair
        except Ended:
            pass
        raise Ended

    def _event(self, side: int, ev: int, view: memoryview, bufs: list[bytearray]) -> None:
        """Everything but a plain readable socket: room to write, hang-ups, paused reads."""
        state = self._state
        out = self._out
        if ev & (_OUT | _GONE) and out[side]:
            self._flush(side)
        if ev & _READABLE and state[side] == OPEN and not out[1 - side]:
            try:
                n, anc, flags, _ = self.socks[side].recvmsg_into(bufs, ANC_SIZE, _RECV_FLAGS)
            except BlockingIOError:
                pass
            except OSError as exc:
                self._read_failed(side, exc)
            else:
                self._received(side, n, anc, flags, time.time_ns(), view)
                return
        elif ev & _GONE:
            if state[side] == HALF:
                self._side_done(side, shutdown_other=True)
            else:
                self._watch.hup[side] = True  # nothing to do with it now: stop hearing about it
        self._watch.update()

    def _received(
        self, side: int, n: int, anc: list, flags: int, ts: int, view: memoryview
    ) -> None:
        """One received chunk in the general case: fds, partial or several messages, EOF."""
        fds = fds_from_ancdata(anc) if anc else []
        if not n:
            close_all(fds)
            self._eof(side, ts)
            self._watch.update()
            return
        d = self._dirs[side]
        if d is None:
            d = self._dirs[side] = self._direction(side)
        inbound = self._inbound[side]
        units = inbound.cut(ts, d, bytes(view[:n]), fds, bool(flags & _MSG_CTRUNC))
        self._forward_units(side, ts, d, units)
        inbound.drop_excess(ts, d)
        self._slow[side] = inbound.slow
        self._watch.update()

    def _forward_units(
        self, side: int, ts: int, direction: Direction, units: list[tuple[bytes, list[int]]]
    ) -> None:
        """Queue each unit's frame and send it (or add it to the backlog)."""
        owner = self.owner
        conn = owner.conn
        channel = self.channel
        dst = 1 - side
        out = self._out[dst]
        rules = self._rules
        for i, (data, fds) in enumerate(units):
            due = 0
            hold = None
            if rules is not None:
                verdict = rules.judge(ts, channel, direction, data, fds)
                if verdict is not None:
                    if verdict.data is None:
                        self._consume(side, ts, direction, data, fds, verdict, units[i + 1 :])
                        continue
                    self._notes(ts, verdict)
                    data = verdict.data
                    if verdict.delay_s or verdict.hold is not None:
                        due, hold = self._backlog.delay(verdict)
            descs: tuple[str, ...] | None = ()
            if fds:
                if self._fd_tap is not None and direction == "f2b":
                    fds = self._fd_tap(conn, ts, data, fds) or fds  # (--trace-notify swaps)
                if (
                    channel == "main"
                    and direction == "f2b"
                    and len(data) >= 4
                    and _U32.unpack_from(data)[0] == _SET_BACKEND_REQ_FD
                ):
                    fds, descs = owner.intercept(self, data, fds)
                elif self._records:
                    descs = None  # described once sent: the syscalls then cost no latency
                if len(fds) > SCM_MAX_FD:
                    extra = fds[SCM_MAX_FD:]
                    fds = fds[:SCM_MAX_FD]
                    close_all(extra)
                    self._note(
                        ts,
                        f"{len(extra)} fd(s) beyond the kernel limit of {SCM_MAX_FD} "
                        "for one message could not be forwarded",
                    )
            if descs is not None and self._records:
                self._put(ts, conn, channel, direction, data, descs)
            self.frames[side] += 1
            self.bytes[side] += len(data)
            self.fds[side] += len(fds)
            if out or due:
                if descs is None:
                    self._put(
                        ts, conn, channel, direction, data, tuple(describe_fd(fd) for fd in fds)
                    )
                out.append(Unsent(memoryview(data), fds, due, hold))
            else:
                try:
                    sent = send_now(self.socks[dst], memoryview(data), fds, keep=descs is None)
                except OSError as exc:
                    if descs is None:
                        self._put(
                            ts, conn, channel, direction, data, tuple(describe_fd(fd) for fd in fds)
                        )
                        close_all(fds)
                    for _, later in units[i + 1 :]:
                        close_all(later)
                    self._send_failed(dst, exc)
                if descs is None:
                    self._put(
                        ts, conn, channel, direction, data, tuple(describe_fd(fd) for fd in fds)
                    )
                    if sent:
                        close_all(fds)  # kept open by _send only to be described
                if sent < len(data):
                    out.append(Unsent(memoryview(data)[sent:], [] if sent else fds))

    def _put(
        self,
        ts: int,
        conn: int,
        channel: Channel,
        direction: Direction,
        data: bytes,
        descs: tuple[str, ...],
    ) -> None:
        """A data frame to the sink (called only when ``_records``: there is one)."""
        self._sink.data(ts, conn, channel, direction, data, descs)  # type: ignore[union-attr]  # only when _records

    def _flush(self, dst: int) -> None:
        """Write as much of the backlog towards ``dst`` as fits; then pass on a waiting EOF."""
        try:
            empty = self._backlog.flush(dst)
        except OSError as exc:
            self._send_failed(dst, exc)
        if empty and self._state[1 - dst] == DRAIN:
            self._pass_eof(1 - dst)

    def _release(self) -> None:
        """Send the delayed messages whose time has come (and what waited behind them)."""
        for dst in self._backlog.due_now():
            self._flush(dst)
        self._watch.update()

    # -- rules (rules.py decides, this and backlog.py carry it out) ----------------------
    def _notes(self, ts: int, verdict: Verdict) -> None:
        for info in verdict.notes:
            self._emit(event_frame("note", ts, self.owner.conn, info, self.channel))

    def _consume(
        self,
        side: int,
        ts: int,
        direction: Direction,
        data: bytes,
        fds: list[int],
        verdict: Verdict,
        later: list[tuple[bytes, list[int]]],
    ) -> None:
        """A message a rule took (drop, reply-error, disconnect): recorded as it came,
        its fds closed, nothing sent on; the proxy's own answer goes back to its sender."""
        conn, channel = self.owner.conn, self.channel
        self._notes(ts, verdict)
        if self._records:
            self._put(ts, conn, channel, direction, data, tuple(describe_fd(fd) for fd in fds))
        close_all(fds)
        self.frames[side] += 1
        self.bytes[side] += len(data)
        reply = verdict.reply
        if reply is not None and self._rules is not None:
            back: Direction = "b2f" if direction == "f2b" else "f2b"
            if self._records:
                self._put(ts, conn, channel, back, reply, ())
            self._rules.sent_by_proxy(ts, channel, back, reply)
            try:
                self._backlog.answer(side, reply)
            except OSError as exc:
                for _, f in later:
                    close_all(f)
                self._send_failed(side, exc)
        if verdict.end is not None:
            for _, f in later:
                close_all(f)
            self._end.end(-1, "proxy", verdict.end)

    # -- orientation, notes, end -------------------------------------------------
    def _direction(self, side: int) -> Direction:
        roles = self.roles
        if roles is None:
            roles = self.owner.orient(self, side)
        return "f2b" if roles[side] == "frontend" else "b2f"

    def _note(self, ts: int, text: str) -> None:
        self._emit(event_frame("note", ts, self.owner.conn, {"text": text}, self.channel))

    def _eof(self, side: int, ts: int) -> None:
        """``side`` sent EOF: forward what the framer still holds, then pass the EOF on."""
        d = self._dirs[side]
        rest = self._inbound[side].rest(ts, d)
        if rest is not None and d is not None:  # (rest is None without a direction)
            self._forward_units(side, ts, d, [rest])
        self._state[side] = DRAIN
        if not self._out[1 - side]:
            self._pass_eof(side)

    def _pass_eof(self, side: int) -> None:
        """Pass ``side``'s EOF on the way it happened (its backlog is written)."""
        src, dst = self.socks[side], self.socks[1 - side]
        if pass_eof(src, dst, self._end, side, self.role(side), self._inbound[side].suffix):
            self._side_done(side, shutdown_other=False)  # (pass_eof shut ``dst`` down)
        else:
            # Wait for the full close that usually follows (or for the other direction
            # to end, or a stop: both leave our socket fully shut down too).
            self._state[side] = HALF
            self._watch.hup[side] = False

    def _side_done(self, side: int, shutdown_other: bool) -> None:
        if shutdown_other:
            with contextlib.suppress(OSError):
                self.socks[1 - side].shutdown(socket.SHUT_RDWR)
        self._state[side] = DONE
        if self._state[1 - side] == DONE:
            raise Ended

    def _close(self) -> None:
        first = self._end.close_once()
        if first is None:
            return
        self._backlog.discard()
        for inbound in self._inbound:
            inbound.close()
        for s in self.socks:
            discard_unread(s)
            with contextlib.suppress(OSError):
                s.close()
        info = close_info(first, self.role)
        if self._rules is not None:  # addons' connection_close hooks (addons.py)
            for note in self._rules.closed(self.channel):
                self._emit(event_frame("note", time.time_ns(), self.owner.conn, note, self.channel))
        self.owner.link_done(self, info)
