"""``--capture-filter``: which frames of a live run go into its capture, decided by decoding.

Only the messages a ``vuinspect read --filter`` expression matches are kept,
with the frames that carried them; events are always kept (they frame the
rest).  Decoding is not the forwarding's work: the proxy's recorder
(proxy/recorder.py) queues the raw frames and its writer thread hands them
here, off the forwarding threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vuinspect.capture.capfile import marked_event
from vuinspect.capture.encoder import Encoder
from vuinspect.frames import DATAPLANE_KINDS, Frame

if TYPE_CHECKING:
    from vuinspect.filter import Predicate
    from vuinspect.proxy.sink import DataItem


class CaptureFilter:
    """``--capture-filter``: frames in (writer thread), the blocks of matching messages out.

    A data frame is kept when a message it completes matches; frames that
    complete none (a message split over several) wait for the one that does.
    Events are always kept: they frame everything else.
    """

    HELD_MAX = 256  # frames of one unfinished message kept waiting (a message is <= 4 KiB + fds)

    def __init__(self, flt: str | Predicate, device: str | None, encoder: Encoder) -> None:
        """``flt``: the filter's text, or the filter already compiled (a caller that
        checked it first does not compile it twice)."""
        from vuinspect.filter import compile_filter
        from vuinspect.pipeline import Pipeline

        self.match = compile_filter(flt) if isinstance(flt, str) else flt
        self.pipeline = Pipeline(device=device, keep_closed=False)
        self.encoder = encoder
        self.held: dict[tuple[int, str, str], list[bytes]] = {}
        self.filtered = 0  # data frames left out

    def _matches(self, msgs: list) -> bool:
        for m in msgs:
            try:
                if self.match(m):
                    return True
            except Exception:  # noqa: BLE001 - a filter that cannot judge a message: keep it
                return True
        return False

    def blocks(self, item: Frame | DataItem, out: list[bytes]) -> None:
        frame = item if type(item) is Frame else Frame(*item)
        try:
            msgs = self.pipeline.feed(frame)
        except Exception:  # noqa: BLE001 - a decoder bug must not stop the capture
            msgs = []
        try:
            block = self.encoder.frame(frame)
        except ValueError:
            return
        if frame.kind in DATAPLANE_KINDS:  # ring samples: as messages
            if self._matches(msgs):  # (left out silently: `filtered` counts traffic)
                out.append(marked_event(block, frame.kind, frame.conn))
            return
        if frame.kind != "data":
            for key in [k for k in self.held if k[0] == frame.conn]:
                self.filtered += len(self.held.pop(key))
            out.append(marked_event(block, frame.kind, frame.conn))
            return
        key = (frame.conn, frame.channel, frame.direction)
        if not msgs:
            held = self.held.setdefault(key, [])
            held.append(block)
            if len(held) > self.HELD_MAX:
                held.pop(0)
                self.filtered += 1
            return
        held = self.held.pop(key, [])
        if self._matches(msgs):
            out += held
            out.append(block)
        else:
            self.filtered += len(held) + 1
