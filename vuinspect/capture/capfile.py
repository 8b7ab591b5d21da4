"""The ``-w`` target of the proxy: opened safely, rotated as a ring buffer, stopped by limits.

Why its own module: the recorder (recorder.py) only packs and queues blocks;
what a capture *file* must never do lives here.  It never truncates a file the
user did not ask to overwrite (``--force``), never writes through a symbolic
link or a hard link, and a FIFO with no reader is waited for off the start-up
path.  Ring buffers and autostop follow dumpcap's option spelling
(``-b filesize:KB``, ``-b duration:S``, ``-b files:N``, ``-a duration:S``,
``-a filesize:KB``, ``-a files:N``, ``-c N``; kB = 1000 bytes as in dumpcap).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CaptureError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``32M``, ``64MiB``, ``1g``, ``500000``: bytes (K/M/G are powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 32M)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


@dataclass
class Limits:
    """Ring buffer (``-b``) and autostop (``-a``, ``-c``) settings; 0 means "no limit"."""

    ring_filesize: int = 0  # bytes
    ring_duration: float = 0.0
    ring_files: int = 0
    stop_duration: float = 0.0
    stop_filesize: int = 0  # bytes, all files together
    stop_files: int = 0
    stop_count: int = 0  # data messages recorded

    @property
    def ring(self) -> bool:
        return bool(self.ring_filesize or self.ring_duration)

    @property
    def active(self) -> bool:
        return bool(
            self.ring
            or self.stop_duration
            or self.stop_filesize
            or self.stop_files
            or self.stop_count
        )


_B_KEYS = {"filesize": "ring_filesize", "duration": "ring_duration", "files": "ring_files"}
_A_KEYS = {"filesize": "stop_filesize", "duration": "stop_duration", "files": "stop_files"}


def limits_from(ring: list[str], autostop: list[str], count: int | None) -> Limits:
    """Parse dumpcap-style ``-b KEY:VALUE`` and ``-a KEY:VALUE`` lists; ValueError says why."""
    lim = Limits()
    for opt, specs, keys in (("-b", ring, _B_KEYS), ("-a", autostop, _A_KEYS)):
        for spec in specs:
            key, _, value = spec.partition(":")
            attr = keys.get(key.strip())
            if attr is None or not value:
                raise ValueError(
                    f"{opt} {spec}: expected one of {', '.join(k + ':N' for k in keys)}"
                )
            try:
                number = float(value) if key == "duration" else int(value)
            except ValueError:
                raise ValueError(f"{opt} {spec}: {value!r} is not a number") from None
            if number <= 0:
                raise ValueError(f"{opt} {spec}: must be positive")
            if key == "filesize":
                number *= 1000  # kB, as dumpcap
            setattr(lim, attr, number)
    if count is not None:
        if count <= 0:
            raise ValueError(f"-c {count}: must be positive")
        lim.stop_count = count
    if lim.ring_files and not lim.ring:
        raise ValueError("-b files:N needs -b filesize:KB or -b duration:S")
    return lim


def ring_name(path: str, number: int, when: float) -> str:
    """dumpcap's ring file names: ``cap.pcapng`` -> ``cap_00001_20261206023000.pcapng``."""
    stem, ext = os.path.splitext(path)
    return f"{stem}_{number:05d}_{time.strftime('%Y%m%d%H%M%S', time.localtime(when))}{ext}"


def check_target(path: str, force: bool) -> None:
    """Refuse at start what ``open_target`` would refuse (nothing is created or changed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(path) or "."):
            raise CaptureError(f"cannot create capture {path}: No such directory") from None
        return
    except OSError as exc:
        raise CaptureError(f"cannot write capture {path}: {exc.strerror}") from None
    _check_existing(path, st, force)


def _check_existing(path: str, st: os.stat_result, force: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise CaptureError(f"refusing to write capture {path}: it is a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        raise CaptureError(f"cannot write capture {path}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        return  # a FIFO or a device (/dev/null): written, never truncated
    if st.st_nlink > 1:
        raise CaptureError(
            f"refusing to write capture {path}: it has {st.st_nlink} hard links "
            "(writing would change the other names too)"
        )
    if st.st_size and not force:
        raise CaptureError(
            f"capture {path} exists ({st.st_size} bytes); give --force to overwrite it"
        )


def open_target(path: str, force: bool) -> int | None:
    """An fd to write the capture to, or None for a FIFO that has no reader yet
    (``open_fifo`` then waits for one, on the writer thread).

    A new file is created 0600 (it holds guest data); an existing regular file
    is overwritten only with ``force`` (or when empty), never through a link,
    and made 0600 too.
    """
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CaptureError(f"cannot create capture {path}: {exc.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise CaptureError(f"cannot write capture {path}: {exc.strerror}") from None
    _check_existing(path, st, force)
    if stat.S_ISFIFO(st.st_mode):
        try:
            fd = os.open(path, flags | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return None  # no reader yet
            raise CaptureError(f"cannot write capture {path}: {exc.strerror}") from None
        os.set_blocking(fd, True)
        return fd
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CaptureError(f"refusing to write capture {path}: it is a symbolic link") from None
        raise CaptureError(f"cannot write capture {path}: {exc.strerror}") from None
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or (
        stat.S_ISREG(now.st_mode) and now.st_nlink > 1
    ):
        os.close(fd)
        raise CaptureError(f"refusing to write capture {path}: it changed while being opened")
    if stat.S_ISREG(now.st_mode):
        os.ftruncate(fd, 0)
        if now.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    return fd


def open_fifo(path: str) -> int:
    """Wait (blocking) for a reader of the FIFO ``path``."""
    return os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.lstat(path).st_mode)
    except OSError:
        return False


# -- blocks as the writer thread sees them ---------------------------------------------------
# Plain ``bytes`` are data packets; these subclasses mark the blocks a file that starts
# mid-stream needs again (section header, interfaces, opens of live connections).
class Shb(bytes):
    """The section header block."""


class Idb(bytes):
    """An interface description block."""


class Event(bytes):
    """An open, close or note packet (``kind``, ``conn`` set by the recorder)."""

    kind = "note"
    conn = 0


def marked_event(block: bytes, kind: str, conn: int) -> Event:
    ev = Event(block)
    ev.kind = kind
    ev.conn = conn
    return ev


class RingFile:
    """The ``-w`` file under ``-b``/``-a``/``-c``: rotated at block boundaries, stopped at a limit.

    Every file starts with the section header, every interface block seen so
    far and the open events of the connections still open, so each one reads
    on its own.  Runs on the recorder's writer thread only.
    """

    quiet = False
    name: str

    def __init__(
        self, path: str, limits: Limits, force: bool, shb: bytes, on_stop: Callable[[str], None]
    ) -> None:
        self.path = path
        self.lim = limits
        self.force = force
        self.shb = shb
        self.on_stop = on_stop
        self.idbs: list[bytes] = []
        self.opens: dict[int, bytes] = {}
        self.files: collections.deque[str] = collections.deque()
        self.number = 0
        self.size = 0  # of the current file
        self.total = 0
        self.count = 0  # data packets written
        self.started = self.file_started = time.monotonic()
        self.fd: int | None = None
        self.stopped = ""
        self._next_file()

    def _next_file(self) -> None:
        self.number += 1
        name = ring_name(self.path, self.number, time.time()) if self.lim.ring else self.path
        fd = open_target(name, self.force)
        if fd is None:
            raise CaptureError(f"cannot write capture {name}: a FIFO cannot be a ring buffer")
        self.fd, self.name = fd, name
        self.files.append(name)
        self.size = 0
        self.file_started = time.monotonic()
        self._write(fd, b"".join((self.shb, *self.idbs, *self.opens.values())))
        while self.lim.ring_files and len(self.files) > self.lim.ring_files:
            with contextlib.suppress(OSError):
                os.unlink(self.files.popleft())

    def _write(self, fd: int, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view) :]
        self.size += len(buf)
        self.total += len(buf)

    def _stop(self, why: str) -> None:
        self.stopped = why
        self.close()
        self.on_stop(why)

    def _rotate(self) -> None:
        if self.lim.stop_files and self.number >= self.lim.stop_files:
            self._stop(f"{self.number} file(s) written (-a files)")
            return
        self.close()
        self._next_file()

    def tick(self) -> None:
        """Time-based limits, checked whenever the writer thread wakes."""
        if self.stopped:
            return
        now = time.monotonic()
        if self.lim.stop_duration and now - self.started >= self.lim.stop_duration:
            self._stop(f"{self.lim.stop_duration:g} s elapsed (-a duration)")
        elif self.lim.ring_duration and now - self.file_started >= self.lim.ring_duration:
            self._rotate()

    def write_blocks(self, blocks: list[bytes]) -> None:
        lim = self.lim
        out: list[bytes] = []
        size = self.size
        for b in blocks:
            t = type(b)
            if t is Shb:
                continue  # each file writes its own
            if t is Idb:
                self.idbs.append(b)
            elif t is Event:
                kind, conn = b.kind, b.conn  # type: ignore[attr-defined]  # an Event: t is its type
                if kind == "open":
                    self.opens[conn] = b
                elif kind == "close":
                    self.opens.pop(conn, None)
            if self.stopped:
                continue
            if t is bytes:
                if lim.stop_count and self.count >= lim.stop_count:
                    self._flush(out)
                    out = []
                    self._stop(f"{self.count} message(s) captured (-c)")
                    continue
                if lim.ring_filesize and size >= lim.ring_filesize:
                    self._flush(out)
                    out = []
                    self._rotate()
                    size = self.size
                    if self.stopped:
                        continue
                self.count += 1
            if lim.stop_filesize and self.total + (size - self.size) + len(b) > lim.stop_filesize:
                self._flush(out)
                out = []
                self._stop(f"{lim.stop_filesize // 1000} kB written (-a filesize)")
                continue
            out.append(b)
            size += len(b)
        self._flush(out)

    def _flush(self, out: list[bytes]) -> None:
        if out and self.fd is not None:
            self._write(self.fd, b"".join(out))

    def write(self, buf: bytes) -> None:  # (the recorder calls write_blocks)
        raise NotImplementedError

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
