"""Be the back-end: answer a live front-end with a capture's recorded replies.

    vuinspect replay captures/blk.pcapng --listen /tmp/be.sock --as-backend
    vuinspect replay net.pcapng --listen vu.sock --as-backend --timeout 10 -w session.pcapng
    vuinspect replay captures/net.pcapng --connect /tmp/qemu.sock --as-backend  # QEMU server=on

vuinspect listens on SOCK and accepts one front-end (QEMU, DPDK virtio-user
...), or with --connect connects to a front-end that listens, and answers each of its requests with the reply recorded for the same request
at the same place (matched by request and order, with the same bounded
look-ahead as the comparison).  The recorded back-end channel requests are sent
on the socket the front-end passed in SET_BACKEND_REQ_FD, right after the
front-end message they followed in the recording.  A request the recording
does not have, but that must be answered, gets a conservative reply (the
recorded reply to the same request if there is one, else a failure the
front-end can see) and a note.  The session ends when the front-end closes,
when it is silent for --timeout (sooner once every recorded request came) or
stops reading; it is compared with the recording as ``vuinspect diff`` does.
No data plane: kicks and guest memory are closed unread, the guest's I/O stalls.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from typing import Any

from ..errors import CliError
from ..frames import Channel, Frame
from ..message import Message
from ..protocol.requests import FLAG_NEED_REPLY, REPLY_FLAGS, FrontendRequest, lookup
from ..proxy.fds import describe_fd
from ..testing import wire
from .compare import LOOKAHEAD
from .replay import EXTRA_MESSAGES, Recorder, make_fd, recv_message, region_sizes, send_timeout

#: After the last recorded request: how long to wait for the front-end to close or say more.
GRACE = 1.0
FAIL = wire.U64.pack(1)  # a REPLY_ACK failure (any non-zero value)
OK = wire.U64.pack(0)


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


class AsBackend(Recorder):
    """Serve one front-end connection from a recorded back-end side; collect the frames."""

    def __init__(
        self,
        recorded: list[Message],
        path: str,
        timeout: float,
        accept_timeout: float = 60.0,
        *,
        connect: bool = False,
    ) -> None:
        super().__init__(recorded, path, timeout)
        self.accept_timeout = accept_timeout
        self.connect = connect  # the front-end listens (QEMU server=on, virtio-user server=1)
        msgs = [m for m in recorded if m.kind == "message"]
        #: The recorded front-end requests on the main socket, in order, and where we are.
        self.expected = [
            m for m in msgs if m.channel == "main" and m.direction == "f2b" and not m.reply
        ]
        self.pos = 0
        self.seen = 0  # front-end requests received
        self._replies = {
            m.frame: m for m in msgs if m.channel == "main" and m.direction == "b2f" and m.reply
        }
        #: The first recorded reply per request id: the conservative answer to an extra request.
        self._reply_by_request: dict[int | None, Message] = {}
        for m in self._replies.values():
            self._reply_by_request.setdefault(m.request, m)
        #: Recorded back-end channel requests, keyed by the front-end request they followed.
        self._after: dict[int, list[Message]] = {}
        last: int | None = None
        for m in msgs:
            if m.channel == "main" and m.direction == "f2b" and not m.reply:
                last = m.frame
            elif m.channel == "backend" and m.direction == "b2f" and not m.reply:
                if last is None:
                    self.notes.append(
                        f"frame {m.frame} {m.name}: before any front-end request, not sent"
                    )
                else:
                    self._after.setdefault(last, []).append(m)

    # -- matching ---------------------------------------------------------------------------

    def match(self, request: int) -> Message | None:
        """The recorded request this one stands for: the next of that id within LOOKAHEAD."""
        for k in range(min(LOOKAHEAD + 1, len(self.expected) - self.pos)):
            m = self.expected[self.pos + k]
            if m.request == request:
                self.pos += k + 1
                return m
        return None

    @property
    def complete(self) -> bool:
        return self.pos >= len(self.expected)

    # -- the session --------------------------------------------------------------------------

    def _accept(self) -> socket.socket:
        if self.connect:
            try:
                return wire.connect(self.path, retries=max(1, int(self.accept_timeout / 0.05)))
            except OSError as exc:
                raise CliError(
                    f"cannot connect to {self.path} within {self.accept_timeout:g} s: "
                    f"{exc.strerror or exc}"
                ) from None
        try:
            listener = wire.listen(self.path)
        except OSError as exc:
            raise CliError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None
        try:
            listener.settimeout(self.accept_timeout)
            print(f"vuinspect: listening on {self.path}", file=sys.stderr, flush=True)
            conn, _ = listener.accept()
        except TimeoutError:
            raise CliError(
                f"no front-end connected to {self.path} within {self.accept_timeout:g} s"
            ) from None
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        return conn

    def run(self, info: dict[str, Any]) -> list[Frame]:
        sock = self._accept()
        sock.settimeout(self.timeout)  # silence and a front-end that stops reading both end it
        open_info = {k: v for k, v in info.items() if k in ("device", "byteorder")}
        if self.connect:
            open_info.update(connect=self.path, orientation="backend-connects")
        else:
            open_info.update(listen=self.path, orientation="frontend-connects")
        open_info.update(label=self.path, replay=True, as_backend=True)
        self._event("open", open_info)
        by, reason = "frontend", "frontend closed the connection"
        try:
            while True:
                if self.complete:
                    sock.settimeout(min(self.timeout, GRACE))
                try:
                    got = recv_message(sock)
                except TimeoutError:
                    if not self.complete:
                        nxt = self.expected[self.pos]
                        self.notes.append(
                            f"no message from the front-end for {self.timeout:g} s; "
                            f"the recording's next was frame {nxt.frame} {nxt.name}"
                        )
                    by, reason = "backend", "replay finished"
                    break
                except (OSError, EOFError) as exc:
                    self.notes.append(f"main channel: frontend: {exc}")
                    reason = f"frontend: {exc}"
                    break
                if got is None:
                    if not self.complete:
                        nxt = self.expected[self.pos]
                        self.notes.append(
                            f"the front-end closed the connection; the recording's "
                            f"next was frame {nxt.frame} {nxt.name}"
                        )
                    break
                if not self._serve(sock, *got):
                    by, reason = "backend", "replay stopped"
                    break
        finally:
            self._end(sock, {"by": by, "reason": reason})
        with self._lock:
            return sorted(self.frames, key=lambda f: f.ts_ns)

    def _serve(self, sock: socket.socket, data: bytes, fds: list[int]) -> bool:
        """One front-end request: record it, answer it, send what followed it in the recording."""
        request, flags, _size = wire.HEADER.unpack_from(data)
        channel = None
        try:
            descs = tuple(describe_fd(fd) for fd in fds)
            if request == FrontendRequest.SET_BACKEND_REQ_FD and self._channel is None:
                sock_fds = [fd for fd in fds if _is_socket(fd)]
                if sock_fds:
                    fds.remove(sock_fds[0])
                    channel = socket.socket(fileno=sock_fds[0])
        finally:
            for fd in fds:  # no data plane: memory, kicks and calls are not used
                os.close(fd)
        self.seen += 1
        if not self._add("main", "f2b", data, descs):
            self.notes.append(
                f"main channel: more than {EXTRA_MESSAGES} messages beyond the recording"
            )
            if channel is not None:
                channel.close()
            return False
        if channel is not None:
            send_timeout(channel, self.timeout)
            self._channel = channel
            self._start(self._read, channel, "backend", lambda _data: None, "frontend")
        m = self.match(request)
        recorded = (
            self._replies.get(m.reply_in) if m is not None and m.reply_in is not None else None
        )
        reply: Message | bytes | None = recorded
        if recorded is not None and not self._wants_reply(request, flags):
            # an ack the front-end did not ask for would be read as the answer to its next request
            self.notes.append(
                f"front-end request #{self.seen} {recorded.name}: sent without "
                f"NEED_REPLY; the reply recorded at frame {recorded.frame} not sent"
            )
            reply = None
        elif recorded is None:
            reply = self._conservative(request, flags, m)
        if reply is not None and not self._send(sock, "main", reply):
            return False
        for b in self._after.get(m.frame, ()) if m is not None else ():
            if self._channel is None:
                self.notes.append(f"frame {b.frame} {b.name}: no back-end channel to send it on")
            elif not self._send(self._channel, "backend", b):
                break
        return True

    @staticmethod
    def _wants_reply(request: int, flags: int) -> bool:
        """Whether the front-end waits for a reply (SET_LOG_BASE's depends on LOG_SHMFD)."""
        spec = lookup("main", request)
        return bool(flags & FLAG_NEED_REPLY) or (
            spec is not None and spec.reply_mode in ("always", "log_shmfd")
        )

    def _conservative(self, request: int, flags: int, m: Message | None) -> Message | bytes | None:
        """A reply for a request the recording did not answer, if the front-end waits for one."""
        spec = lookup("main", request)
        name = spec.name if spec is not None else f"request {request}"
        if not flags & FLAG_NEED_REPLY and (spec is None or spec.reply_mode != "always"):
            return None
        where = (
            f"recorded at frame {m.frame} without a reply"
            if m is not None
            else "not in the recording"
        )
        at = f"front-end request #{self.seen} {name}"
        if spec is not None and spec.reply_mode == "always":
            got = self._reply_by_request.get(request)
            if got is not None:
                self.notes.append(
                    f"{at}: {where}; answered with the reply recorded at frame {got.frame}"
                )
                return got
            self.notes.append(
                f"{at}: {where}; answered with an empty reply (a failure the front-end can see)"
            )
            return wire.pack(request, REPLY_FLAGS)
        ok = m is not None  # the recorded back-end took it; an extra request is refused
        self.notes.append(f"{at}: {where}; acked with {'success (0)' if ok else 'failure (1)'}")
        return wire.pack(request, REPLY_FLAGS, OK if ok else FAIL)

    def _send(self, sock: socket.socket, channel: Channel, what: Message | bytes) -> bool:
        """Send a recorded message (fds made anew from their recorded kinds) or raw bytes."""
        data = what if isinstance(what, bytes) else what.raw
        fds: list[int] = []
        try:
            if isinstance(what, Message):
                sizes = region_sizes(what)
                for i, d in enumerate(what.fds):
                    fds.append(make_fd(d, sizes[i] if i < len(sizes) else 0))
            self._add(channel, "b2f", data, tuple(describe_fd(fd) for fd in fds))
            wire.send_raw(sock, data, fds)
        except OSError as exc:  # incl. a send timeout: the front-end stopped reading
            label = what.name if isinstance(what, Message) else "reply"
            self.notes.append(
                f"{channel} channel: cannot send {label} ({exc.strerror or type(exc).__name__})"
            )
            return False
        finally:
            for fd in fds:
                os.close(fd)
        return True
