"""Python addons for the proxy (``vuinspect proxy --script FILE.py``), mitmproxy style.

An addon is a Python file with any of three hooks (docs/rules.md, "Addons"):

    def connection_open(flow): ...
    def message(flow, msg): ...      # may msg.delay(s), msg.drop(), msg.answer(...),
                                     # msg.disconnect(), change msg.payload or msg.raw
    def connection_close(flow): ...

Addons are not a second path through the proxy: what a hook asks for becomes the
same :class:`vuinspect.verdict.Verdict` a rule produces, which the relay carries
out (proxy/relay.py), and each action is a capture note like a rule firing.

Threading: hooks run on the forwarding thread of the message's connection (one
per channel of each connection), serialised per connection; a hook that blocks
holds its own connection only (other connections have their own threads), and
is reported when it takes longer than ``SLOW_HOOK_S``.  An exception in a hook
undoes what that hook did to the message, is reported (one line and a note) and
the message goes on.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, cast

from .encode import encode_layout
from .framing import HOST_HEADER
from .numtext import number_text
from .protocol.failures import failure_payload
from .protocol.requests import FLAG_REPLY, FLAG_VERSION_MASK, HEADER_SIZE, MAX_MESSAGE, lookup
from .verdict import MAX_DELAY_S, Verdict, firing_note

HOOKS = {"message": 2, "connection_open": 1, "connection_close": 1}
#: A hook slower than this is reported (its connection waited for it).
SLOW_HOOK_S = 1.0
#: Error lines printed in full per addon and hook; later ones are only counted.
ERROR_LINES = 3
#: Longest exception text reported or noted.
MAX_ERROR_CHARS = 500


class AddonError(ValueError):
    """A script that cannot be used (one line, said at start)."""


class Addon:
    """One loaded hook holder (the script's module, or one object of its ``addons`` list)."""

    def __init__(self, name: str, path: str, hooks: dict[str, Callable[..., Any]]) -> None:
        self.name = name
        self.path = path
        self.hooks = hooks
        self.actions = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._said: dict[str, int] = {}

    def count(self, errors: int = 0, actions: int = 0) -> None:
        with self._lock:
            self.errors += errors
            self.actions += actions

    def should_say(self, hook: str) -> int:
        """How many error lines this hook has had (after counting this one)."""
        with self._lock:
            self._said[hook] = self._said.get(hook, 0) + 1
            return self._said[hook]


def _check_hook(path: str, holder: object, hook: str, fn: object) -> Callable[..., Any]:
    if not callable(fn):
        raise AddonError(f"--script {path}: {hook} is not a function")
    try:
        sig = inspect.signature(fn)
        sig.bind(*([None] * HOOKS[hook]))
    except (TypeError, ValueError):
        want = "(flow, msg)" if hook == "message" else "(flow)"
        line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
        where = f"{path}:{line}" if line else path
        try:
            have = str(inspect.signature(fn))
        except (TypeError, ValueError):
            have = "?"
        raise AddonError(f"--script {where}: {hook}{have} must take {want}") from None
    return fn


def load_addons(path: str, index: int = 0) -> list[Addon]:
    """Load one script: compiled, run once, hooks checked.  Raises AddonError (one line)."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise AddonError(f"--script {path}: {exc.strerror or exc}") from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        raise AddonError(
            f"--script {path}:{exc.lineno}:{exc.offset}: syntax error: {exc.msg}"
        ) from None
    except ValueError as exc:  # e.g. NUL bytes
        raise AddonError(f"--script {path}: {exc}") from None
    module = types.ModuleType(f"vuinspect_addon_{index}")
    module.__file__ = path
    try:
        exec(code, module.__dict__)  # running the user's own addon is the point
    except Exception as exc:  # noqa: BLE001 - any failure of the script is its user's to see
        raise AddonError(
            f"--script {path}{_where(exc, path)}: failed to load: {type(exc).__name__}: {exc}"
        ) from None
    base = os.path.basename(path)
    holders: list[tuple[str, object]] = [(base, module)]
    listed = module.__dict__.get("addons")
    if isinstance(listed, (list, tuple)):
        holders = [(f"{base}:{type(o).__name__}", o) for o in listed]
    addons = []
    for name, holder in holders:
        hooks = {}
        for hook in HOOKS:
            fn = getattr(holder, hook, None)
            if fn is not None:
                hooks[hook] = _check_hook(path, holder, hook, fn)
        if hooks:
            addons.append(Addon(name, path, hooks))
    if not addons:
        raise AddonError(
            f"--script {path}: defines none of the hooks message(flow, msg), "
            "connection_open(flow), connection_close(flow)"
        )
    return addons


def load_scripts(paths: list[str]) -> list[Addon]:
    return [a for i, p in enumerate(paths) for a in load_addons(p, i)]


def _where(exc: BaseException, path: str) -> str:
    """``:LINE`` of the deepest frame of ``exc`` in the addon's file, or ''."""
    line = None
    for fs in traceback.extract_tb(exc.__traceback__):
        if fs.filename == path:
            line = fs.lineno
    return f":{line}" if line else ""


class Flow:
    """One connection as addons see it (mitmproxy's flow).

    ``session`` is the decoder's :class:`vuinspect.session.Session` of the
    connection: ``virtio_offered/acked``, ``protocol_offered/acked``, ``regions``
    (the memory table), ``vrings`` (index -> Vring), ``backend_channel``...  It
    is built from the messages as they arrived (before any rule or addon change).
    ``metadata`` is the addons' own dict for this connection.
    """

    def __init__(self, conn: int, session: Any) -> None:
        self.conn = conn
        self.session = session
        self.metadata: dict[str, Any] = {}
        self.closed = False

    @property
    def features(self) -> int | None:
        """The virtio features the front-end acked (None before SET_FEATURES)."""
        return self.session.virtio_acked

    @property
    def memory(self) -> list:
        return self.session.regions

    @property
    def vrings(self) -> dict:
        return self.session.vrings


class AddonMessage:
    """The message a ``message`` hook gets: the decoded fields plus what it may do.

    Read: ``name``, ``request``, ``flags``, ``reply``, ``need_reply``, ``channel``,
    ``direction``, ``fds`` (descriptions), ``layout``, ``problems``, ``decoded``
    (the whole :class:`vuinspect.message.Message`).  Change: ``payload`` (a dict
    of the decoder's fields, re-encoded by the same tables when changed) or
    ``raw`` (the whole message's bytes).  Act: :meth:`delay`, :meth:`drop`,
    :meth:`answer`, :meth:`answer_error`, :meth:`disconnect`.
    """

    def __init__(self, decoded: Any, raw: bytes) -> None:
        self.decoded = decoded
        self.raw = raw
        self.payload: dict[str, Any] = copy.deepcopy(decoded.payload)
        self._delay = 0.0
        self._dropped = False
        self._answer: bytes | None = None
        self._end = False

    def __getattr__(self, name: str) -> Any:
        if name in (
            "name",
            "request",
            "flags",
            "reply",
            "need_reply",
            "channel",
            "direction",
            "fds",
            "layout",
            "problems",
            "conn",
            "ts_ns",
            "size",
            "latency_us",
        ):
            return getattr(self.__dict__["decoded"], name)
        raise AttributeError(name)

    def delay(self, seconds: float) -> None:
        """Hold the message back ``seconds`` (what follows it in its direction waits too)."""
        if (
            not isinstance(seconds, (int, float))
            or math.isnan(seconds)
            or not 0 <= self._delay + seconds <= MAX_DELAY_S
        ):
            raise ValueError(f"delay must be 0-{MAX_DELAY_S:g} seconds in all, not {seconds!r}")
        self._delay += float(seconds)

    def drop(self) -> None:
        """Do not send it (its fds are closed); the peer never sees it."""
        self._dropped = True

    def disconnect(self) -> None:
        """Cut the connection (both peers see it go) instead of sending it."""
        self._end = True

    def answer(self, payload: dict[str, Any] | bytes = b"", *, flags: int | None = None) -> None:
        """Answer the sender instead of the peer: a reply to this request.

        ``payload`` as bytes, or a dict of fields encoded with the request's reply
        layout (vuinspect/protocol tables).  The message itself is not sent on.
        """
        if isinstance(payload, dict):
            spec = lookup(self.channel, self.request)
            layouts = spec.reply if spec is not None else ()
            if not layouts:
                raise ValueError(f"{self.name} has no reply layout: answer with bytes")
            _check_keys(layouts[0], payload, set(), f"{self.name} reply")
            body = encode_layout(layouts[0], payload, self.decoded.order)
        else:
            body = bytes(payload)
        if len(body) > MAX_MESSAGE - HEADER_SIZE:
            raise ValueError(f"an answer's payload is at most {MAX_MESSAGE - HEADER_SIZE} bytes")
        fl = ((self.flags or 0) & FLAG_VERSION_MASK) | FLAG_REPLY if flags is None else flags
        self._answer = HOST_HEADER.pack(self.request or 0, fl, len(body)) + body

    def answer_error(self) -> None:
        """Answer with the failure reply the spec allows (as the ``reply-error`` rule)."""
        spec = lookup(self.channel, self.request)
        body = (
            None
            if spec is None or self.reply
            else failure_payload(spec, self.flags or 0, self.raw[HEADER_SIZE:])
        )
        if body is None:
            raise ValueError(f"no failure reply the spec allows for {self.name}")
        self.answer(body)

    def encoded(self, original: dict[str, Any]) -> bytes:
        """The message's bytes: ``raw``, re-encoded if the payload was changed."""
        raw = self.raw
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError(f"msg.raw must be bytes, not {type(raw).__name__}")
        raw = self.raw = bytes(raw)
        if not HEADER_SIZE <= len(raw) <= MAX_MESSAGE:
            raise ValueError(
                f"msg.raw must be {HEADER_SIZE} to {MAX_MESSAGE} bytes, not {len(raw)}"
            )
        if self.payload == original:
            return raw
        spec = lookup(self.channel, self.request)
        layouts = () if spec is None else (spec.reply if self.reply else spec.request)
        layout = next((lay for lay in layouts if lay.name == self.layout), None)
        if layout is None:
            raise ValueError(f"{self.name}: no layout to encode the changed payload with")
        _check_keys(layout, self.payload, set(original), self.name)
        body = encode_layout(layout, self.payload, self.decoded.order)
        req, flags, _ = HOST_HEADER.unpack_from(raw)
        return HOST_HEADER.pack(req, flags, len(body)) + body


def _check_keys(layout: Any, values: dict[str, Any], known: set[str], what: str) -> None:
    """A key the layout does not have would be silently left out: say so instead."""
    names: set[str] = set()
    for f in layout.fields:
        names.add(f.name)
        names.update(sub for sub, _ in getattr(f, "bitfields", ()))
        for attr in ("count", "length"):
            if isinstance(getattr(f, attr, None), str):
                names.add(getattr(f, attr))
    unknown = sorted(set(values) - names - known)
    if unknown:
        raise ValueError(f"{what} has no field {unknown[0]!r} (fields: {', '.join(sorted(names))})")


def call_hook(addon: Addon, hook: str, *args: Any) -> tuple[BaseException | None, float]:
    """Run one hook; (the exception it raised or None, seconds it took)."""
    t0 = time.monotonic()
    try:
        addon.hooks[hook](*args)
    except Exception as exc:  # noqa: BLE001 - an addon never breaks the link
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def exc_text(exc: BaseException) -> str:
    """``Type: message``, cut to ``MAX_ERROR_CHARS`` (an addon may put peer data in it)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def error_text(addon: Addon, hook: str, exc: BaseException, what: str) -> str:
    where = _where(exc, addon.path)
    return f"addon {addon.name}: {hook}() raised {exc_text(exc)} ({addon.path}{where}); {what}"


def say(text: str) -> None:
    """Default report line (stderr); the proxy command may replace it (e.g. under the TUI)."""
    from .render import safe_text

    print(f"vuinspect proxy: {safe_text(text)}", file=sys.stderr, flush=True)


class ConnAddons:
    """The addons on one connection: its Flow, its hooks serialised by one lock."""

    def __init__(
        self,
        addons: list[Addon],
        conn: int,
        session: Any,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.addons = addons
        self.flow = Flow(conn, session)
        self.report = report or say
        self.opened = False
        self._lock = threading.Lock()

    def _trouble(
        self,
        addon: Addon,
        hook: str,
        exc: BaseException | None,
        took: float,
        what: str,
        data: bytes,
        direction: str,
    ) -> list[dict[str, object]]:
        """Notes (and report lines) for a hook that raised or was slow."""
        notes: list[dict[str, object]] = []
        if exc is not None:
            addon.count(errors=1)
            text = error_text(addon, hook, exc, what)
            n = addon.should_say(hook)
            if n <= ERROR_LINES:
                self.report(
                    text
                    + ("" if n < ERROR_LINES else " (further errors of this hook are only counted)")
                )
            notes.append(
                _note(addon, hook, "error", text, data, data, direction, error=exc_text(exc))
            )
        if took > SLOW_HOOK_S:
            text = (
                f"addon {addon.name}: {hook}() took {took:.1f} s; connection "
                f"{self.flow.conn} waited for it (use msg.delay() to hold a message)"
            )
            self.report(text)
            notes.append(_note(addon, hook, "slow", text, data, data, direction))
        return notes

    def _open(self, data: bytes, direction: str) -> list[dict[str, object]]:
        self.opened = True
        notes: list[dict[str, object]] = []
        for addon in self.addons:
            if "connection_open" in addon.hooks:
                exc, took = call_hook(addon, "connection_open", self.flow)
                notes += self._trouble(
                    addon, "connection_open", exc, took, "connection goes on", b"", direction
                )
        return notes

    def close(self) -> list[dict[str, object]]:
        """connection_close hooks (once, and only after connection_open)."""
        with self._lock:
            if not self.opened or self.flow.closed:
                return []
            self.flow.closed = True
            notes: list[dict[str, object]] = []
            for addon in self.addons:
                if "connection_close" in addon.hooks:
                    exc, took = call_hook(addon, "connection_close", self.flow)
                    notes += self._trouble(addon, "connection_close", exc, took, "ignored", b"", "")
            return notes

    def judge(self, msgs: list | None, data: bytes, direction: str, verdict: Any) -> Any:
        """Run the message hooks on one message; the rules' Verdict extended (or a new one)."""

        with self._lock:
            notes = [] if self.opened else self._open(data, direction)
            decoded = next((m for m in msgs or () if m.kind == "message"), None)
            cur = data
            if decoded is not None and not self.flow.closed:
                msg = AddonMessage(decoded, cur)
                for addon in self.addons:
                    if "message" not in addon.hooks:
                        continue
                    cur, done = self._one(addon, msg, cur, direction, notes)
                    if done is not None:
                        verdict = verdict or Verdict(cur)
                        verdict.notes += notes
                        verdict.data = None
                        if done == "answer":
                            verdict.reply = msg._answer
                        elif done == "disconnect":
                            verdict.end = f"addon {addon.name}: connection cut"
                        return verdict
            if verdict is None and not notes and cur is data:
                return None
            verdict = verdict or Verdict(cur)
            verdict.notes += notes
            verdict.data = cur
            # notes are note infos (values: object); _one() stores delay_s as a number
            verdict.delay_s += sum(
                float(cast(float, n.get("delay_s", 0.0))) for n in notes if n["action"] == "delay"
            )
            return verdict

    def _one(
        self,
        addon: Addon,
        msg: AddonMessage,
        cur: bytes,
        direction: str,
        notes: list[dict[str, object]],
    ) -> tuple[bytes, str | None]:
        """One addon's message hook: (the bytes after it, how it ended the message or None)."""
        before = (msg.raw, copy.deepcopy(msg.payload), msg._delay)
        msg.raw = cur
        exc, took = call_hook(addon, "message", self.flow, msg)
        new = cur
        if exc is None:
            try:
                new = msg.encoded(before[1])
            except Exception as err:  # noqa: BLE001 - a payload the tables cannot encode
                exc = err
        if exc is not None:
            msg.raw, msg.payload, msg._delay = before
            msg._dropped, msg._answer, msg._end = False, None, False
            notes += self._trouble(
                addon, "message", exc, took, "message forwarded unchanged", cur, direction
            )
            return cur, None
        notes += self._trouble(addon, "message", None, took, "", cur, direction)
        acted = 0
        if msg._end or msg._answer is not None or msg._dropped:
            how = "disconnect" if msg._end else "answer" if msg._answer is not None else "drop"
            what = {
                "disconnect": "connection cut by the addon before this message",
                "answer": "answered by the addon; the peer never saw it",
                "drop": "dropped; the peer never saw it",
            }[how]
            notes.append(
                _note(
                    addon,
                    "message",
                    how,
                    f"addon {addon.name}: {what}",
                    cur,
                    b"",
                    direction,
                    answer=msg._answer,
                )
            )
            addon.count(actions=1)
            return cur, how
        if msg._delay > before[2]:
            d = msg._delay - before[2]
            notes.append(
                _note(
                    addon,
                    "message",
                    "delay",
                    f"addon {addon.name}: delayed {d:g} s",
                    cur,
                    cur,
                    direction,
                    delay_s=d,
                )
            )
            acted = 1
        if new != cur:
            what = _changes(before[1], msg.payload, msg.layout) or "bytes changed"
            notes.append(
                _note(
                    addon, "message", "modify", f"addon {addon.name}: {what}", cur, new, direction
                )
            )
            acted = 1
            msg.raw = new
            msg.payload = copy.deepcopy(msg.payload)
        addon.count(actions=acted)
        return new, None


def _show(key: str, value: object, layout: str | None) -> str:
    """A value in a note: numbers by numtext's one rule, the rest as Python writes them."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = number_text(key, value, layout)
    else:
        text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _changes(old: dict[str, Any], new: dict[str, Any], layout: str | None) -> str:
    """``payload.num 256 -> 64, ...`` for the first few fields a hook changed."""
    keys = [k for k in new if k in old and new[k] != old[k]] + [k for k in new if k not in old]
    parts = []
    for k in keys[:3]:
        name = f"payload.{k}"
        parts.append(f"{name} {_show(name, old.get(k), layout)} -> {_show(name, new[k], layout)}")
    return ", ".join(parts) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _note(
    addon: Addon,
    hook: str,
    action: str,
    text: str,
    old: bytes,
    new: bytes,
    direction: str,
    **extra: object,
) -> dict[str, object]:
    """A note event's info: as a rule's, with ``addon`` and ``hook`` for ``rule``."""
    who = {"addon": addon.name, "hook": hook}
    fired = action not in ("error", "slow")
    return firing_note(text, who, action, old, new, direction, fired=fired, **extra)
