"""A capture ``view --follow`` names before it exists: the view waits for it.

Started before the proxy that will write the file (``-w``), the view is empty,
titled ``waiting for PATH``, and quits as usual; once the file appears it is
followed as :class:`FileSource` follows one (an existing empty file too).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from vuinspect.capture import CaptureError, CaptureIndex
from vuinspect.frames import Frame

from .sources import FileSource, Source


class AwaitedFile(Source):
    """Empty until ``path`` exists, then the following :class:`FileSource` of it."""

    live = True
    POLL_S = 0.2  # how often a waiting view looks for the file

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.name = f"waiting for {self.path}"
        self.load_error: CaptureError | None = None  # (the title shows it)
        self._lock = threading.Lock()
        self._file: FileSource | None = None
        self._closed = False

    def _opened(self) -> FileSource | None:
        """The file's source once it exists (opened by whichever thread asks first)."""
        if self._file is None and self.load_error is None and os.path.exists(self.path):
            with self._lock:
                if self._file is None and self.load_error is None and not self._closed:
                    try:
                        self._file = FileSource(self.path, follow=True)
                    except CaptureError as exc:
                        self.load_error = exc
                        self.name = self.path  # (no longer waiting: it came and failed)
                    else:
                        self.name = self._file.name
        return self._file

    @property
    def index(self) -> CaptureIndex | None:
        """The file's index (the title reads its damage), None while waiting."""
        file = self._file
        return file.index if file is not None else None

    def __len__(self) -> int:
        file = self._opened()
        return len(file) if file is not None else 0

    def frame(self, i: int) -> Frame:
        file = self._file
        if file is None:
            raise IndexError(i)
        return file.frame(i)

    def frames_from(self, start: int) -> Iterator[Frame]:
        file = self._opened()
        if file is not None:
            yield from file.frames_from(start)

    @property
    def ended(self) -> bool:
        file = self._file
        return file.ended if file is not None else self._closed

    @property
    def loading(self) -> bool:
        file = self._file
        return file.loading if file is not None else False

    def wait(self, have: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._opened() is None and self.load_error is None and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.POLL_S, left))
        file = self._file
        if file is not None:
            file.wait(have, max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            file = self._file
        if file is not None:
            file.close()
