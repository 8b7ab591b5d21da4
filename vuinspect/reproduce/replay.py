"""The front-end role of ``vuinspect replay``: send the recorded front-end side of one
connection to a live back-end and collect its answers (``command.py`` runs it).

Guest memory contents are not in a capture: the rings the back-end sees are
empty, so values that depend on guest I/O (GET_VRING_BASE after I/O) differ.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

from ..capture.capfile import parse_size
from ..errors import CliError
from ..frames import DATAPLANE_KINDS, Channel, Direction, Frame, Kind, event_frame
from ..message import Message
from ..protocol.requests import HEADER_SIZE, MAX_PAYLOAD, REPLY_FLAGS, split_fd_role
from ..proxy.fds import ANC_SIZE, describe_fd, fds_from_ancdata
from ..testing import wire

#: Back-end messages kept beyond what the recording had, before the replay gives up on it.
EXTRA_MESSAGES = 1000
#: The size proxy/fds.format_size wrote into an fd's description (``size=256MiB``); the
#: text is the capture's: more digits than a u64 has is no size (int() refuses > 4300).
_SIZE = re.compile(r"\bsize=(\d{1,20}(?:KiB|MiB|GiB)?)(?![\dKMG])")
#: Largest memfd the replay creates (sparse, but a capture must not make us ask for more).
MAX_REGION = 1 << 40


# -- fds ----------------------------------------------------------------------------------


def recorded_size(desc: str) -> int:
    m = _SIZE.search(desc)
    return parse_size(m.group(1)) if m else 0


def region_sizes(msg: Message) -> list[int]:
    """Bytes each fd of ``msg`` must hold for the recorded region table to be mappable."""
    p = msg.payload
    regions = p.get("regions")
    items: list[Any] = regions if isinstance(regions, list) else [p]
    out = []
    for item in items:
        if not isinstance(item, dict):
            out.append(0)
            continue
        size = item.get("memory_size", item.get("mmap_size", 0))
        off = item.get("mmap_offset", 0)
        out.append(size + off if isinstance(size, int) and isinstance(off, int) else 0)
    return out


def make_fd(desc: str, need: int) -> int:
    """A new fd of the recorded kind: an eventfd, a memfd of the recorded size, a pipe end."""
    what = split_fd_role(desc)[1]
    if what.startswith("eventfd"):
        return wire.eventfd()
    if what.startswith("pipe"):
        r, w = os.pipe2(os.O_CLOEXEC)
        os.close(w)
        return r
    if what.startswith("socket"):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.close()
        return theirs.detach()
    name = what.split(" ", 1)[0].removeprefix("memfd:")[:200] or "vuinspect-replay"
    size = min(max(recorded_size(what), need), MAX_REGION)
    if " hugetlb" in what:  # huge pages where the host has them; plain memory otherwise
        with contextlib.suppress(OSError, ValueError):
            return _memfd(name, size, os.MFD_HUGETLB)
    return _memfd(name, size, 0)


def _memfd(name: str, size: int, flags: int) -> int:
    try:  # the recorded name, so the replay's fd descriptions match the recording's
        fd = os.memfd_create(name, os.MFD_CLOEXEC | flags)
    except ValueError:  # a name with a NUL
        fd = os.memfd_create("vuinspect-replay", os.MFD_CLOEXEC | flags)
    except OSError:
        if flags:
            raise
        fd = os.memfd_create("vuinspect-replay", os.MFD_CLOEXEC)  # a name the kernel refuses
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def recv_message(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One whole message and its fds; None at EOF.  Sizes over MAX_PAYLOAD are refused."""
    fds: list[int] = []
    try:
        return _recv_message(sock, fds)
    except BaseException:  # a timeout or an error mid-message: the fds it brought are closed
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise


def _recv_message(sock: socket.socket, fds: list[int]) -> tuple[bytes, list[int]] | None:
    data = b""
    need = HEADER_SIZE
    while len(data) < need:
        chunk, anc, _flags, _ = sock.recvmsg(need - len(data), ANC_SIZE, socket.MSG_CMSG_CLOEXEC)
        fds += fds_from_ancdata(anc)
        if not chunk:
            if data:
                raise EOFError(f"peer closed mid-message after {len(data)} bytes")
            for fd in fds:
                os.close(fd)
            return None
        data += chunk
        if len(data) == HEADER_SIZE and need == HEADER_SIZE:
            size = wire.HEADER.unpack(data)[2]  # host order, as the peer
            if size > MAX_PAYLOAD:
                raise EOFError(f"header announces {size} payload bytes (max {MAX_PAYLOAD})")
            need += size
    return data, fds


def send_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_SNDTIMEO only: a blocked send fails after ``seconds``; receiving still blocks."""
    whole = int(seconds)
    sock.setsockopt(
        socket.SOL_SOCKET,
        socket.SO_SNDTIMEO,
        struct.pack("@ll", whole, int((seconds - whole) * 1e6)),
    )


# -- the replay ------------------------------------------------------------------------------


class Recorder:
    """The frames of one live session, bounded, with notes on what went wrong (both roles)."""

    def __init__(self, recorded: list[Message], path: str, timeout: float) -> None:
        self.recorded = recorded
        self.path = path
        self.timeout = timeout
        self.frames: list[Frame] = []
        self._lock = threading.Lock()
        self._budget = len(recorded) + EXTRA_MESSAGES
        self._channel: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        #: What went wrong on the way (timeouts, an early close), for the report.
        self.notes: list[str] = []
        self.finished = False

    def _add(
        self, channel: Channel, direction: Direction, data: bytes, fds: tuple[str, ...]
    ) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            self.frames.append(Frame(time.time_ns(), 1, channel, direction, data, fds))
            return True

    def _event(self, kind: Kind, info: dict[str, Any], channel: Channel = "main") -> None:
        with self._lock:
            self.frames.append(event_frame(kind, time.time_ns(), 1, info, channel))

    def _start(self, target, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _read(
        self, sock: socket.socket, channel: Channel, on_message, peer: str = "backend"
    ) -> None:
        """Receive the peer's messages on one channel until EOF or the budget ends."""
        direction: Direction = "b2f" if peer == "backend" else "f2b"
        by = f"{peer} closed the connection"
        clean = by
        try:
            while True:
                got = recv_message(sock)
                if got is None:
                    break
                data, fds = got
                descs = tuple(describe_fd(fd) for fd in fds)
                for fd in fds:
                    os.close(fd)
                if not self._add(channel, direction, data, descs):
                    by = f"more than {EXTRA_MESSAGES} messages beyond the recording"
                    break
                on_message(data)
        except (OSError, EOFError) as exc:
            by = f"{peer}: {exc}"
        self._event("close", {"by": peer, "reason": by}, channel)
        if by != clean or not self.finished:
            self.notes.append(f"{channel} channel: {by}")
        self._closed(channel)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _closed(self, channel: str) -> None:
        """Called when the peer's side of ``channel`` ended."""

    def _end(self, sock: socket.socket, close: dict[str, Any]) -> None:
        """Record the close, shut both channels, let the readers finish (bounded), close."""
        self.finished = True
        self._event("close", close)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        if self._channel is not None:  # a reply already on its way is still read
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_WR)
            for t in self._threads:
                t.join(0.3)
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(2)
        sock.close()
        if self._channel is not None:
            self._channel.close()


class Replay(Recorder):
    """Drive one back-end connection with a recorded front-end side; collect the frames."""

    def __init__(self, recorded: list[Message], path: str, timeout: float) -> None:
        super().__init__(recorded, path, timeout)
        self._replies: queue.Queue[bool] = queue.Queue()
        self._answers = {
            m.frame: m for m in recorded if m.channel == "backend" and m.direction == "f2b"
        }
        #: Recorded back-end channel requests by request id, in order (answered once each).
        self._backend_requests: dict[int | None, deque[Message]] = {}
        for m in recorded:
            if m.channel == "backend" and m.direction == "b2f" and not m.reply:
                self._backend_requests.setdefault(m.request, deque()).append(m)

    def _closed(self, channel: str) -> None:
        if channel == "main":
            self._replies.put(False)

    def _answer(self, data: bytes) -> None:
        """A back-end channel request: give the answer the recording gave, if any."""
        request, flags, _size = wire.HEADER.unpack_from(data)
        pending = self._backend_requests.get(request)
        if pending:
            m = pending.popleft()
            answer = self._answers.get(m.reply_in) if m.reply_in is not None else None
            if answer is not None:
                self._send_channel(answer.raw)
            return
        if flags & wire.FLAG_NEED_REPLY:  # not in the recording: ack it, reported as unexpected
            self._send_channel(wire.pack(request, REPLY_FLAGS, wire.U64.pack(0)))

    def _send_channel(self, data: bytes) -> None:
        if self._channel is not None and self._add("backend", "f2b", data, ()):
            with contextlib.suppress(OSError):
                self._channel.sendall(data)

    def _fds(self, m: Message) -> tuple[list[int], socket.socket | None]:
        """New fds for ``m`` (and our end of the back-end channel, when it passes one)."""
        sizes = region_sizes(m)
        fds: list[int] = []
        channel = None
        try:
            for i, desc in enumerate(m.fds):
                if m.name == "SET_BACKEND_REQ_FD" and "socket" in desc and channel is None:
                    channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                    fds.append(theirs.detach())
                else:
                    fds.append(make_fd(desc, sizes[i] if i < len(sizes) else 0))
        except OSError:
            for fd in fds:
                os.close(fd)
            if channel is not None:
                channel.close()
            raise
        return fds, channel

    def run(self, info: dict[str, Any]) -> list[Frame]:
        try:
            sock = wire.connect(self.path, retries=20)
        except OSError as exc:
            raise CliError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        open_info = {k: v for k, v in info.items() if k in ("device", "byteorder")}
        open_info.update(
            connect=self.path, label=self.path, orientation="frontend-connects", replay=True
        )
        send_timeout(sock, self.timeout)  # a back-end that stops reading cannot hang us
        self._event("open", open_info)
        self._start(self._read, sock, "main", lambda _data: self._replies.put(True))
        alive = True
        try:
            for m in self.recorded:
                if not alive:
                    break
                if m.channel != "main" or m.direction != "f2b" or m.is_event:
                    continue
                alive = self._send(sock, m)
        finally:
            time.sleep(0.1)  # what the back-end still says after the last message
            self._end(sock, {"by": "frontend", "reason": "replay finished"})
        with self._lock:
            return sorted(self.frames, key=lambda f: f.ts_ns)

    def _send(self, sock: socket.socket, m: Message) -> bool:
        """Send one recorded message with new fds; wait for its reply if it had one."""
        while not self._replies.empty():  # unsolicited messages were recorded already
            if not self._replies.get_nowait():
                return False
        try:
            fds, channel = self._fds(m)
        except OSError as exc:
            self.notes.append(f"frame {m.frame} {m.name}: cannot make its fds ({exc.strerror})")
            return False
        try:
            descs = tuple(describe_fd(fd) for fd in fds)
            self._add("main", "f2b", m.raw, descs)
            wire.send_raw(sock, m.raw, fds)
        except OSError as exc:
            self.notes.append(f"frame {m.frame} {m.name}: send failed ({exc.strerror})")
            return False
        finally:
            for fd in fds:
                os.close(fd)
        if channel is not None:
            send_timeout(channel, self.timeout)
            self._channel = channel
            self._start(self._read, channel, "backend", self._answer)
        if m.reply_in is None:
            return True
        try:
            return self._replies.get(timeout=self.timeout)
        except queue.Empty:  # reported as a missing reply; the session goes on
            self.notes.append(f"frame {m.frame} {m.name}: no reply within {self.timeout:g} s")
            return True


def pick_connection(messages: list[Message], conn: int | None) -> list[Message]:
    conns = list(dict.fromkeys(m.conn for m in messages))
    if not conns:
        raise CliError("the capture holds no connection")
    if conn is None:
        conn = conns[0]
    elif conn not in conns:
        raise CliError(f"no connection {conn} in the capture (it has {', '.join(map(str, conns))})")
    # (ring samples and notification counts are the data plane, not messages to replay)
    return [m for m in messages if m.conn == conn and m.kind not in DATAPLANE_KINDS]
