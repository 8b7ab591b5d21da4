"""Where the TUI's frames come from: a capture file (indexed, maybe still growing) or a live feed.

The app only ever asks a source for ``len(source)`` and ``source.frame(i)``
(frame number ``i + 1``), and waits on it for more; it never owns the proxy or
a file reader.  Both sources are safe to read from the decoding thread and the
UI thread at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from vuinspect.capture import CaptureIndex, CaptureReader, build_index
from vuinspect.frames import Frame


class Source:
    """The interface the model reads (a capture file and a live feed both provide it)."""

    name: str = ""
    live: bool = False  # ages are measured against the wall clock, follow mode starts on

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> Frame:
        raise NotImplementedError

    def frames_from(self, start: int) -> Iterator[Frame]:
        """Frames ``start``, ``start + 1``, ... (the decoder's sequential path)."""
        i = start
        while i < len(self):
            yield self.frame(i)
            i += 1

    @property
    def ended(self) -> bool:
        """True once no frame will ever be added."""
        return True

    def wait(self, have: int, timeout: float) -> None:
        """Block until there are more than ``have`` frames, the source ends, or ``timeout``."""
        time.sleep(timeout)

    def close(self) -> None:
        pass


class FileSource(Source):
    """A capture file, read through its block-offset index (TECH.md §1).

    With ``follow=True`` the file is re-scanned for appended blocks, like
    ``tail -f`` (a capture the proxy is still writing with ``-w``).
    """

    def __init__(self, path: str | os.PathLike[str], *, follow: bool = False,
                 index: CaptureIndex | None = None) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.index = index if index is not None else build_index(self.path)
        self.follow = follow
        self.live = follow
        self._stopped = False

    def __len__(self) -> int:
        return len(self.index)

    def frame(self, i: int) -> Frame:
        return self.index.frame(i)

    def frames_from(self, start: int) -> Iterator[Frame]:
        """A whole file is decoded through its own streaming reader.

        ``index.frame`` takes the index's lock for every frame; a decoding
        thread doing that a million times starves the UI thread's row reads
        of the same lock (a page down took a second).  The reader shares nothing.
        """
        if start or self.follow:
            yield from super().frames_from(start)
            return
        reader = CaptureReader(self.path)
        try:
            yield from reader
        finally:
            reader.close()

    @property
    def ended(self) -> bool:
        return not self.follow or self._stopped

    def wait(self, have: int, timeout: float) -> None:
        if not self.follow:
            time.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        while not self._stopped:
            if self.index.update() or len(self.index) > have:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def close(self) -> None:
        self._stopped = True
        self.index.close()


class LiveSource(Source):
    """Frames pushed by another thread (the proxy's sink), kept in memory.

    ``push`` is thread-safe and cheap (an append and a notify): call it straight
    from ``ProxyServer(routes, sink=source.push)``.  ``end()`` says the feed is
    over (the proxy stopped).
    """

    live = True

    def __init__(self, name: str = "live") -> None:
        self.name = name
        self._frames: list[Frame] = []
        self._cond = threading.Condition()
        self._ended = False

    def push(self, frame: Frame) -> None:
        with self._cond:
            self._frames.append(frame)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, i: int) -> Frame:
        return self._frames[i]

    @property
    def ended(self) -> bool:
        return self._ended

    def wait(self, have: int, timeout: float) -> None:
        with self._cond:
            if len(self._frames) <= have and not self._ended:
                self._cond.wait(timeout)

    def close(self) -> None:
        self.end()


class FrameListSource(LiveSource):
    """A fixed list of frames (tests, screenshots): a live source that has already ended."""

    live = False

    def __init__(self, frames: list[Frame], name: str = "frames") -> None:
        super().__init__(name)
        self._frames = list(frames)
        self._ended = True
