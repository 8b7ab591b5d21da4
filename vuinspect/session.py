"""Per-connection session: negotiated state, request/reply pairing, stateful checks.

A :class:`Session` sees every framed message of one connection (both
channels) in order.  It chooses the payload layout (request and reply layouts
differ, and some depend on negotiated features), pairs replies with the
requests waiting for them, measures latency, keeps the memory table and vring
state, and adds the conformance problems that need state.  The rules it
applies are PROTOCOL.md §1.5 (replies) and §2-§6; what each request does to the
state, and which stateful checks it gets, is the table of protocol/effects.py, which
the session runs as resolved once per request by :mod:`vuinspect.rule_steps` (the
generated dissector's runtime_effects.lua interprets the same table).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import rule_steps
from .dataplane.diagnose import Finding, is_receive_queue
from .dataplane.track import MAX_RINGS, DataPlane
from .decoder import RawMessage, decode_payload, label_fds, read_header
from .frames import Channel, Direction
from .message import Message
from .payload import DecodeContext
from .protocol import features as F
from .protocol.layouts import VRING_FD_BITS
from .protocol.problems import problem
from .protocol.requests import FLAG_REPLY, FrontendRequest, RequestSpec
from .state import MAX_PENDING, Pending, Region, RequestStats, Vring, count_request

_REPLY_ACK = F.protocol_mask("REPLY_ACK")
_XEN_MMAP = F.protocol_mask("XEN_MMAP")
_LOG_SHMFD = F.protocol_mask("LOG_SHMFD")
_VRING_FD_INDEX = dict(VRING_FD_BITS)["index"]  # a SET_VRING_CALL's vring bits

#: Decode contexts (and their cache keys) the sessions share: most connections negotiate
#: alike, and one each was ~140 bytes a connection.  Nothing changes a context once made.
MAX_CONTEXTS = 256
_CONTEXTS: dict[tuple[str, str | None, bool, bool], tuple[DecodeContext, tuple]] = {}
#: What a session without a data plane reads as (only :meth:`Session.tracked_dataplane`
#: changes one; this one is never written).
_NO_DATAPLANE = DataPlane()


class Session:
    """State of one vhost-user connection (main channel and back-end channel).

    Slotted, and what many connections never use is made on first use (the pairing
    queues, the data plane): a capture of one message per connection number must not
    make ``read`` hold ~70x its size (tests/hostile/test_connection_cost.py).
    """

    __slots__ = (
        "_backend_waits",
        "_call_dropped",
        "_ctx",
        "_ctx_key",
        "_dataplane",
        "_decoded",
        "_label",
        "_main_waits",
        "_resolved",
        "_steps",
        "backend_channel",
        "backend_fd",
        "close_reason",
        "closed_ns",
        "config",
        "conn",
        "device",
        "device_given",
        "first_ns",
        "framing",
        "inflight",
        "info",
        "last_ns",
        "log",
        "max_mem_slots",
        "messages",
        "mtu",
        "opened_ns",
        "order",
        "owner",
        "paired",
        "problem_count",
        "protocol_acked",
        "protocol_offered",
        "queue_num",
        "regions",
        "seen_start",
        "stats",
        "status",
        "virtio_acked",
        "virtio_offered",
        "vrings",
    )

    def __init__(
        self,
        conn: int,
        *,
        device: str | None = None,
        order: str = "<",
        cache: dict[tuple, tuple] | None = None,
        steps: rule_steps.StepTable | None = None,
    ) -> None:
        self.conn = conn
        self.info: dict[str, Any] = {}
        self._label: str | None = None  # (its default made when asked: ~60 bytes a connection)
        self.device = device
        self.device_given = device is not None
        self.order = order
        self.opened_ns: int | None = None
        self.closed_ns: int | None = None
        self.close_reason: str | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.seen_start = False  # the capture holds the connection from its first message
        # negotiation
        self.virtio_offered: int | None = None
        self.virtio_acked: int | None = None
        self.protocol_offered: int | None = None
        self.protocol_acked: int | None = None
        self.owner = False
        self.queue_num: int | None = None
        self.max_mem_slots: int | None = None
        self.status: int | None = None
        self.mtu: int | None = None
        self.config: str | None = None
        self.log: dict[str, Any] | None = None
        self.inflight: dict[str, Any] | None = None
        # resources
        self.regions: list[Region] = []
        self.vrings: dict[int, Vring] = {}
        self.backend_channel: str = "none"  # none | requested | established
        self.backend_fd: str | None = None
        # pairing: each channel's requests waiting for a reply, oldest first (see waits()),
        # made on first use; a list (at most MAX_PENDING), not a deque: a deque holds a
        # 64-slot block from the start, and two a connection were ~1.5 KB
        self._main_waits: list[Pending] | None = None
        self._backend_waits: list[Pending] | None = None
        self.stats: dict[str, RequestStats] = {}
        #: per-vring data plane (ring/notify frames, issue 13), made on first use
        self._dataplane: DataPlane | None = None
        #: The pipeline's: (channel, direction, byte order) of each stream framed, in the
        #: order its first bytes came (a tuple the sessions share; see Pipeline.feed_iter)
        self.framing: tuple[tuple[Channel, Direction, str], ...] = ()
        #: The vring of a SET_VRING_CALL a proxy note says was dropped; its message follows.
        self._call_dropped: int | None = None
        self.messages = 0
        #: problems found in this connection's messages (Message.problems is the list)
        self.problem_count = 0
        #: The request the latest paired reply answered (a reply with ``reply_to`` set just did).
        self.paired: Message | None = None
        self._ctx: DecodeContext | None = None
        # payload decode cache, shared by the sessions of a pipeline: real traffic repeats
        self._decoded: dict[tuple, tuple] = {} if cache is None else cache
        self._ctx_key: tuple = ()
        # what each request does, resolved from the rule table (a pipeline shares one)
        self._steps = rule_steps.table() if steps is None else steps
        self._resolved = self._steps.resolved  # id(spec) -> its steps, once resolved

    # -- derived ---------------------------------------------------------------
    @property
    def problems(self) -> int:
        """Old name of :attr:`problem_count`, read-only (addon scripts reach the session
        through ``flow.session``); a number, not the list ``Message.problems`` is."""
        warnings.warn("Session.problems is Session.problem_count", DeprecationWarning, stacklevel=2)
        return self.problem_count

    @property
    def label(self) -> str:
        """The connection's name: its open frame's label, else ``conn N``."""
        return self._label or f"conn {self.conn}"

    @label.setter
    def label(self, value: str) -> None:
        self._label = value

    @property
    def packed(self) -> bool:
        return bool((self.virtio_acked or 0) >> F.RING_PACKED_BIT & 1)

    def protocol_has(self, mask: int) -> bool | None:
        """Is every bit of ``mask`` negotiated?  None while unknown."""
        if self.protocol_acked is None:
            return None
        return self.protocol_acked & mask == mask

    def context(self) -> DecodeContext:
        """The decode context, rebuilt only when negotiation changes it."""
        ctx = self._ctx
        if ctx is None:
            key = (
                self.order,
                self.device,
                self.packed,
                bool((self.protocol_acked or 0) & _XEN_MMAP),
            )
            known = _CONTEXTS.get(key)
            if known is None:
                if len(_CONTEXTS) >= MAX_CONTEXTS:  # (device names come from peers)
                    _CONTEXTS.clear()
                known = _CONTEXTS[key] = (DecodeContext(*key), key)
            ctx, self._ctx_key = known
            self._ctx = ctx
        return ctx

    def vring(self, index: int) -> Vring | None:
        """Vring ``index``, made on first use; None past :data:`MAX_RINGS` (a peer naming
        ever new vrings must not grow the session: the message says vring_out_of_range)."""
        ring = self.vrings.get(index)
        if ring is None and 0 <= index < MAX_RINGS:
            ring = self.vrings[index] = Vring(index)
        return ring

    @property
    def dataplane(self) -> DataPlane:
        """The per-vring data plane (ring/notify frames, issue 13), to read: until a frame or
        message gives the session one (:meth:`tracked_dataplane`), a shared empty one, so
        that a view or a table reading every session makes none."""
        dp = self._dataplane
        return _NO_DATAPLANE if dp is None else dp

    def tracked_dataplane(self) -> DataPlane:
        """The data plane to change, made on first use."""
        dp = self._dataplane
        if dp is None:
            dp = self._dataplane = DataPlane()
        return dp

    def waits(self, channel: str) -> list[Pending] | None:
        """``channel``'s requests waiting for a reply, oldest first; None before its first.
        Only the session changes it (the pipeline asks it in :meth:`Pipeline.owes_reply`)."""
        return self._main_waits if channel == "main" else self._backend_waits

    @property
    def pending(self) -> Mapping[str, tuple[Pending, ...]]:
        """channel -> :meth:`waits`, read-only (the old attribute's shape: a copy, so that a
        caller that changed it would not think it changed the session)."""
        return MappingProxyType(
            {"main": tuple(self._main_waits or ()), "backend": tuple(self._backend_waits or ())}
        )

    def _queues(self) -> list[list[Pending]]:
        """The pairing queues made so far, main channel first (as they always were)."""
        return [q for q in (self._main_waits, self._backend_waits) if q is not None]

    def waiting(self) -> list[Pending]:
        """Requests waiting for a reply (required or optional), oldest first (who waits on
        whom)."""
        return [p for q in self._queues() for p in q]

    def owed(self) -> list[Pending]:
        """Requests still owed a reply (the state demands one), oldest first per channel:
        what a close or the end of a capture leaves unanswered, what the faces show waiting."""
        return [p for q in self._queues() for p in q if p.expected]

    @property
    def started_ns(self) -> int | None:
        """When the connection started: its open event, else its first frame seen."""
        return self.opened_ns if self.opened_ns is not None else self.first_ns

    # -- events ----------------------------------------------------------------
    def _invalidate(self) -> None:
        self._ctx = None

    def on_open(self, ts_ns: int, info: dict[str, Any]) -> None:
        self._invalidate()
        self.info = info
        self.opened_ns = ts_ns
        self.seen_start = True
        self.label = str(info.get("label") or self.label)
        if info.get("device") and not self.device_given:
            self.device = str(info["device"])
        if info.get("byteorder") == "big":
            self.order = ">"

    def on_close(self, ts_ns: int, reason: str) -> list[Pending]:
        """Mark the end; returns the requests that never got their reply."""
        self.closed_ns = ts_ns
        self.close_reason = reason
        left = self.owed()
        for p in left:
            p.message.problems.append(
                problem("missing_reply", f"connection ended before the reply ({reason})")
            )
        return left

    # -- data plane ----------------------------------------------------------------
    def receive_queue(self, index: int) -> bool:
        """Does vring ``index`` only hold buffers for the device to fill (a quiet rx queue)?"""
        return is_receive_queue(self.device, index)

    def on_ring(self, ts_ns: int, info: dict[str, Any]) -> tuple[list, list[Finding]]:
        """A ``ring`` frame: its problems (sampled and diagnosed) and the findings it ends."""
        self._seen(ts_ns)
        _, found, ended = self.tracked_dataplane().on_sample(info, self.receive_queue)
        return [problem(code, text) for code, text in found], ended

    def on_notify(self, ts_ns: int, info: dict[str, Any]) -> list:
        self._seen(ts_ns)
        why = self.tracked_dataplane().on_notify(info)
        return [problem("ring_bad_sample", why)] if why else []

    def rings_stopped(
        self, ts_ns: int, indices: list[int] | None = None, final: bool = False
    ) -> list:
        """GET_VRING_BASE (one ring), RESET_*, close (all, ``final``): problems for requests
        in flight (judged at the ring's stop sample unless ``final``)."""
        dp = self._dataplane
        if dp is None:  # (no ring seen, no call fd sent: nothing stopped)
            return []
        return [
            problem(f.code, f.text) for f in dp.on_reset(ts_ns, indices, self.receive_queue, final)
        ]

    def on_note(self, info: dict[str, Any]) -> None:
        """A rule's or addon's note (written just before the message it acted on): a dropped
        SET_VRING_CALL leaves the back-end without a call fd (docs/capture-format.md)."""
        original = info.get("original")
        if (
            info.get("action") != "drop"
            or info.get("fired") is False
            or info.get("direction") != "f2b"
            or not isinstance(original, str)
            or len(original) != 40  # a SET_VRING_CALL: header and u64
        ):
            return
        try:
            request, flags, size, u64 = struct.unpack(self.order + "IIIQ", bytes.fromhex(original))
        except ValueError:
            return
        if request == FrontendRequest.SET_VRING_CALL and not flags & FLAG_REPLY and size == 8:
            self._call_dropped = u64 & _VRING_FD_INDEX

    def _seen(self, ts_ns: int) -> None:
        if self.first_ns is None:
            self.first_ns = ts_ns
        self.last_ns = max(self.last_ns or ts_ns, ts_ns)

    # -- messages ----------------------------------------------------------------
    def handle(
        self, raw: RawMessage, index: int, direction: Direction, channel: Channel
    ) -> Message:
        """Decode one framed message, pair it, check it against the state and update that.

        The decoding is :mod:`vuinspect.decoder`'s stateless steps (the TUI's re-decode
        runs the same ones, as decode_message; tests/core/test_decode_alone.py), then
        :meth:`_settle`, told where the payload's problems start.
        """
        msg, spec = read_header(raw, channel, direction, self.order, conn=self.conn, index=index)
        cut = len(msg.problems)
        if spec is None:  # raw bytes or an unknown request: nothing to decode
            self._settle(msg, None, cut)
            return msg
        ctx = self._ctx
        if ctx is None:
            ctx = self.context()  # (renews _ctx_key: negotiation changed it)
        decode_payload(msg, spec, ctx, self._decoded, self._ctx_key)
        self._settle(msg, spec, cut)
        if msg.fds:
            label_fds(msg, spec)
        return msg

    def _settle(self, msg: Message, spec: RequestSpec | None, cut: int) -> None:
        """Count, pair, check and apply a decoded message; its problems from ``cut`` on
        (the payload's) come after pairing's, in the order the Lua dissector reports."""
        if not self._arrive(msg):
            return
        problems = msg.problems
        later = problems[cut:] if len(problems) > cut else None
        if later:
            del problems[cut:]
        if spec is None:  # an unknown request: paired, nothing else
            if msg.reply:
                self._pair(msg)
            else:
                self._enqueue(msg, None)
        else:
            steps = self._resolved.get(id(spec)) or self._steps.get(spec)
            if msg.reply:
                request = self._pair(msg)
                if later:
                    problems.extend(later)
                steps.reply(self, msg, request)
            else:
                self._enqueue(msg, spec)
                if later:
                    problems.extend(later)
                steps.request(self, msg)
        self.problem_count += count_request(self.stats, msg)

    def _arrive(self, msg: Message) -> bool:
        """Count a message in; False for a raw chunk (nothing more to do with it)."""
        self.messages += 1
        if self.first_ns is None:
            self.first_ns = msg.ts_ns
        self.last_ns = msg.ts_ns
        if msg.kind == "raw":
            self._count(msg)
            return False
        if (
            self.messages == 1
            and msg.request == FrontendRequest.GET_FEATURES
            and msg.channel == "main"
        ):
            self.seen_start = True
        return True

    def _count(self, msg: Message) -> None:
        self.problem_count += count_request(self.stats, msg)

    # -- pairing -------------------------------------------------------------------
    def _expects_reply(self, msg: Message, spec: RequestSpec | None) -> tuple[bool, bool]:
        """(a reply may come, the state demands one)."""
        if spec is None:
            return msg.need_reply, False
        mode = spec.reply_mode
        if mode == "always":
            return True, True
        if mode == "flag":
            return msg.need_reply, msg.need_reply
        if mode == "log_shmfd" and self.protocol_has(_LOG_SHMFD):
            return True, True
        if mode in ("ack", "log_shmfd"):
            return msg.need_reply, bool(msg.need_reply and self.protocol_has(_REPLY_ACK))
        return False, False

    def _enqueue(self, msg: Message, spec: RequestSpec | None) -> None:
        queue = self.waits(msg.channel)
        if queue is None:
            queue = []
            if msg.channel == "main":
                self._main_waits = queue
            else:
                self._backend_waits = queue
        # At most one optional entry exists, the newest: its reply did not come, which is fine.
        if queue and not queue[-1].expected:
            queue.pop()
        if queue:  # one problem however many wait: a stalled peer must not cost O(n^2)
            head = queue[0].message
            more = f" (and {len(queue) - 1} later requests)" if len(queue) > 1 else ""
            msg.problems.append(
                problem(
                    "request_while_waiting",
                    f"{head.name} (frame {head.frame}) still waits for its reply{more}",
                )
            )
        may, must = self._expects_reply(msg, spec)
        if may:
            if len(queue) >= MAX_PENDING:
                old = queue.pop(0)  # (a move of at most MAX_PENDING pointers)
                if old.expected:
                    old.message.problems.append(
                        problem("missing_reply", f"given up: {MAX_PENDING} later requests wait")
                    )
            queue.append(Pending(msg, msg.ts_ns, must))

    def _pair(self, msg: Message) -> Message | None:
        queue = self.waits(msg.channel)
        if not queue:
            msg.problems.append(problem("reply_to_nothing", "no request is waiting for a reply"))
            return None
        match: Pending | None = queue[0]  # (the usual case: the oldest request's reply)
        if queue[0].message.request != msg.request:
            match = next((p for p in queue if p.message.request == msg.request), None)
        if match is None:
            head = queue[0].message
            msg.problems.append(
                problem(
                    "reply_mismatch",
                    f"reply id {msg.request} but {head.name} (id {head.request}, "
                    f"frame {head.frame}) waits",
                )
            )
            return None
        if match is not queue[0]:
            head = queue[0].message
            msg.problems.append(
                problem(
                    "reply_mismatch",
                    f"replies out of order: {head.name} (frame {head.frame}) was sent first",
                )
            )
        queue.remove(match)
        req = self.paired = match.message
        msg.reply_to = req.frame
        req.reply_in = msg.frame
        msg.latency_us = (msg.ts_ns - req.ts_ns) / 1000.0
        if not match.expected and self.protocol_has(_REPLY_ACK) is False:
            msg.problems.append(
                problem("unexpected_reply", "REPLY_ACK is not negotiated, no reply was due")
            )
        return req
