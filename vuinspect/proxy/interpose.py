"""Owning a listen path safely, and sitting in front of a live back-end's socket.

A plain listen path may be new, or a stale socket nobody listens on (replaced);
a symlink, a non-socket file or a live socket is refused.  ``--interpose PATH``
takes over a *live* socket without a moment where PATH is missing: the proxy
binds a temporary name, hard-links the back-end's socket to
``PATH.vuinspect-orig`` and renames its own socket onto PATH in one atomic step
(a bound Unix socket keeps working under a new name).  Restoring is again one
rename.  The back-end is never connected to while checking, because some
back-ends (virtiofsd) serve one connection and exit when it closes.  A stale
socket (nothing listens: the back-end died or is restarting) is interposed
all the same, with a :attr:`Listener.note` saying so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

#: sun_path holds 108 bytes with the terminating NUL (QEMU and most peers need it).
MAX_UNIX_PATH = 107
ORIG_SUFFIX = ".vuinspect-orig"
_TMP_SUFFIX = ".vuinspect-new"


class ListenError(Exception):
    """A listen path the proxy cannot (or must not) own; the text is one clear line."""


def _listening_paths() -> set[str] | None:
    """Paths of listening Unix sockets in this network namespace, from /proc/net/unix
    (None: it could not be read)."""
    paths: set[str] = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            next(f, None)
            for line in f:
                # Num RefCount Protocol Flags Type St Inode Path
                parts = line.split(None, 7)
                if len(parts) == 8 and int(parts[3], 16) & 0x10000:  # __SO_ACCEPTCON
                    paths.add(parts[7].rstrip("\n"))
    except (OSError, ValueError):
        return None
    return paths


def _is_live(path: str) -> bool:
    """Does something listen on the socket at ``path``?"""
    listening = _listening_paths() or set()
    if path in listening or os.path.abspath(path) in listening:
        return True
    # Bound under another spelling (relative path, renamed): ask the socket itself.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    else:
        return True
    finally:
        probe.close()


def _not_listed(path: str) -> bool:
    """Nothing listens on ``path`` as far as /proc/net/unix tells, never asking the socket:
    a back-end that serves one connection (virtiofsd) would end on a probe.  False when
    the listing cannot be read (no verdict)."""
    listening = _listening_paths()
    return listening is not None and not {path, os.path.abspath(path)} & listening


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ListenError(f"cannot inspect {path}: {exc.strerror}") from exc


def _bind(path: str, mode: int, owner: tuple[int, int] | None = None) -> tuple[socket.socket, int]:
    """Bind + chmod (+ chown) before listen(), so nobody connects with wrong permissions."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ListenError(
            f"cannot listen on {path}: too long for a Unix socket path "
            f"({len(os.fsencode(path))} bytes, at most {MAX_UNIX_PATH})"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if owner is not None:
            st = os.stat(path)
            if (st.st_uid, st.st_gid) != owner:
                try:
                    os.chown(path, *owner)
                except PermissionError as exc:
                    raise ListenError(
                        f"cannot give {path} the owner {owner[0]}:{owner[1]} of the original socket "
                        f"({exc.strerror}); run as that user or as root"
                    ) from exc
        sock.listen(128)
        ino = os.stat(path).st_ino
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    except ListenError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return sock, ino


class Listener:
    """A listening socket at ``path`` that this process owns and cleans up."""

    def __init__(self, path: str, mode: int = 0o600) -> None:
        self.path = path
        self.mode = mode
        self.sock: socket.socket | None = None
        self._ino = -1
        #: One line the user should read once ``open()`` worked (None: nothing to say).
        self.note: str | None = None

    def open(self) -> socket.socket:
        st = _lstat(self.path)
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise ListenError(f"{self.path} is a symlink; refusing to listen through it")
            if not stat.S_ISSOCK(st.st_mode):
                raise ListenError(f"{self.path} exists and is not a socket; refusing to replace it")
            if _is_live(self.path):
                raise ListenError(
                    f"something is already listening on {self.path} "
                    "(use --interpose to sit in front of it)"
                )
            try:
                os.unlink(self.path)  # a stale socket left by a dead process
            except OSError as exc:
                raise ListenError(
                    f"cannot replace stale socket {self.path}: {exc.strerror}"
                ) from exc
        self.sock, self._ino = _bind(self.path, self.mode)
        return self.sock

    def _ours(self) -> bool:
        st = _lstat_quiet(self.path)
        return st is not None and st.st_ino == self._ino and stat.S_ISSOCK(st.st_mode)

    def close(self) -> None:
        """Stop listening and remove our socket file (only if it is still ours)."""
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        if self._ours():
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _lstat_quiet(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


class Interposer(Listener):
    """Listen on a live back-end's path; its socket waits at ``PATH.vuinspect-orig``."""

    def __init__(self, path: str, mode: int | None = None) -> None:
        super().__init__(path, mode if mode is not None else 0o600)
        self.keep_mode = mode is None
        self.orig = path + ORIG_SUFFIX
        self._orig_ino = -1

    def open(self) -> socket.socket:
        st = _lstat(self.path)
        if st is None:
            raise ListenError(
                f"cannot interpose {self.path}: no such socket (start the back-end first)"
            )
        if stat.S_ISLNK(st.st_mode):
            raise ListenError(f"{self.path} is a symlink; refusing to interpose through it")
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenError(f"cannot interpose {self.path}: not a socket")
        if len(os.fsencode(self.orig)) > MAX_UNIX_PATH:
            raise ListenError(
                f"cannot interpose {self.path}: moved aside as {self.orig} it would be too long "
                f"for a Unix socket path (at most {MAX_UNIX_PATH} bytes); use --listen/--connect"
            )
        if _lstat(self.orig) is not None:
            raise ListenError(
                f"{self.orig} already exists (left by an earlier run?); "
                f"move it back to {self.path} or remove it first"
            )
        if _not_listed(self.path):
            self.note = (
                f"nothing listens on {self.path} (is the back-end running?): interposing anyway; "
                "connections will fail; its socket is put back on exit"
            )
        tmp = self.path + _TMP_SUFFIX
        if _lstat(tmp) is not None:
            tst = os.lstat(tmp)
            if not stat.S_ISSOCK(tst.st_mode) or _is_live(tmp):
                raise ListenError(f"{tmp} exists; remove it first")
            os.unlink(tmp)
        mode = stat.S_IMODE(st.st_mode) if self.keep_mode else self.mode
        self.sock, self._ino = _bind(tmp, mode, (st.st_uid, st.st_gid))
        try:
            os.link(self.path, self.orig)
        except OSError as exc:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ListenError(
                f"cannot move {self.path} aside to {self.orig}: {exc.strerror}"
            ) from exc
        self._orig_ino = st.st_ino
        try:
            os.rename(tmp, self.path)  # atomic: PATH is never missing
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self.orig)
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ListenError(f"cannot take over {self.path}: {exc.strerror}") from exc
        return self.sock

    def close(self) -> None:
        """Put the back-end's socket back at PATH (atomically replacing ours)."""
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        orig = _lstat_quiet(self.orig)
        if orig is None or orig.st_ino != self._orig_ino:
            # Someone moved things meanwhile: do not guess, just drop our socket.
            if self._ours():
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            return
        if self._ours() or _lstat_quiet(self.path) is None:
            os.rename(self.orig, self.path)
        elif not _is_live(self.orig):
            # A restarted back-end re-created PATH; the old socket kept aside is dead.
            with contextlib.suppress(OSError):
                os.unlink(self.orig)
