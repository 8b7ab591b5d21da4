"""The TUI's side of the interactive intercept (``i``, then ``a``/``e``/``d``/``A``).

The proxy engine holds the messages (holds.py); the TUI, a separate process, only
says what to do through a control socket (one JSON line per command) and learns
what is held from the capture itself: the engine records a note before each held
message and one for each decision, so what the list shows is what the capture says
(``read`` and Wireshark see the same).

:class:`Holds` follows those notes (fed from the feed thread, read by the app);
:class:`Control` writes the commands without ever blocking the TUI;
:class:`EditScreen` is the form that edits a held message's decoded fields, checked
by the same re-encoding the engine will do (holds.reencode).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from vuinspect.filter import FilterError, compile_filter
from vuinspect.frames import Frame, event_info
from vuinspect.holds import MAX_COMMAND, reencode
from vuinspect.numtext import number_text
from vuinspect.render import safe_text

if TYPE_CHECKING:
    from .list_actions import ListActions

#: Data frames remembered for a hold note that comes after its message (bounded).
RECENT = 256
#: Fields shown one per line in the form; bigger payloads are edited as JSON per key.
MAX_FORM_FIELDS = 64


def _is_hold_note(frame: Frame) -> dict[str, Any] | None:
    if frame.kind != "note":
        return None
    info = event_info(frame)
    if not str(info.get("rule", "")).startswith("intercept") or not isinstance(
        info.get("hold"), int
    ):
        return None
    return info


class Holds:
    """Which rows are held now (hold number by row), from the capture's intercept notes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[int, int] = {}  # row -> hold number (held now)
        self._by_number: dict[int, int] = {}  # hold number -> row
        self._notes: dict[int, int] = {}  # hold number -> row of its "held" note
        self._waiting: dict[tuple, int] = {}  # (conn, channel, direction, bytes) -> number
        self._recent: OrderedDict[tuple, int] = OrderedDict()  # same key -> row
        self._count = 0
        self.changed = 0  # bumped on every change (the app repaints on it)

    def observe(self, frame: Frame) -> None:
        """One frame as the source gets it (rows are counted here, in push order)."""
        row = self._count
        self._count += 1
        if frame.kind == "data":
            key: tuple = (frame.conn, frame.channel, frame.direction, bytes(frame.data))
            with self._lock:
                number = self._waiting.pop(key, None)
                if number is not None:
                    self._held(number, row)
                else:
                    self._recent[key] = row
                    if len(self._recent) > RECENT:
                        self._recent.popitem(last=False)
            return
        info = _is_hold_note(frame)
        if info is None:
            return
        number = info["hold"]
        with self._lock:
            if info.get("action") == "hold":
                if info.get("fired") is False or not number:
                    return
                self._notes[number] = row
                try:
                    data = bytes.fromhex(str(info.get("original", "")))
                except ValueError:
                    return
                key = (frame.conn, frame.channel, info.get("direction"), data)
                if key in self._recent:
                    self._held(number, self._recent.pop(key))
                else:
                    self._waiting[key] = number
                    while len(self._waiting) > RECENT:
                        self._waiting.pop(next(iter(self._waiting)))
            else:  # a decision: no longer held
                row_held = self._by_number.pop(number, None)
                if row_held is not None:
                    self.rows.pop(row_held, None)
                self._notes.pop(number, None)
                self._waiting = {k: v for k, v in self._waiting.items() if v != number}
                self.changed += 1

    def _held(self, number: int, row: int) -> None:
        self.rows[row] = number
        self._by_number[number] = row
        self.changed += 1

    def at(self, row: int | None) -> int | None:
        """The hold number of ``row`` (the held message, or its note), or None."""
        if row is None:
            return None
        with self._lock:
            if row in self.rows:
                return self.rows[row]
            for number, note_row in self._notes.items():
                if note_row == row and number in self._by_number:
                    return number
        return None

    def row_of(self, number: int) -> int | None:
        with self._lock:
            return self._by_number.get(number)

    def oldest(self) -> int | None:
        with self._lock:
            return min(self._by_number, default=None)

    def __len__(self) -> int:
        return len(self.rows)


class Control:
    """The control socket to the engine: commands out, error lines back.

    Writes never block: a command that does not fit the socket now is refused
    (the user is told and can press the key again); nothing a user does stalls the TUI.
    """

    def __init__(self, fd: int, on_error: Callable[[str], None] | None = None) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.on_error = on_error
        self.filter_text = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name="vuinspect-ctl")
        self._reader.start()

    def send(self, cmd: dict[str, Any]) -> str | None:
        """Send one command; returns why it could not be sent, or None."""
        line = json.dumps(cmd, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_COMMAND:
            return "the edited message is too large to send"
        with self._lock:
            try:
                sent = self.sock.send(line, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return "the proxy is busy; try again"
            except OSError as exc:
                return f"the proxy cannot be reached: {exc.strerror or exc}"
            if sent < len(line):  # (a unix stream socket takes all or nothing this small)
                return "the proxy is busy; try again"
        if cmd.get("cmd") == "set-intercept":
            self.filter_text = str(cmd.get("filter", ""))
        return None

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                select.select([self.sock], [], [])  # (the socket stays non-blocking for send)
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                return
            if not chunk:
                return
            buf = (buf + chunk)[-MAX_COMMAND:]
            *lines, buf = buf.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError, TypeError):
                    text = json.loads(line).get("error")
                    if text and self.on_error is not None:
                        self.on_error(safe_text(str(text))[:300])

    def close(self) -> None:
        """The engine then releases what is held (shutdown first: the reader thread's
        select keeps the socket open past a plain close)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


# -- the keys (the app's actions call these; ``app`` is the VuInspectApp) ------------------------
def open_prompt(app: ListActions) -> None:
    """``i``: the prompt, with the filter in force."""
    if app.control is None:
        return
    app.prompt.open(
        "intercept",
        "i hold messages matching:",
        app.control.filter_text,
        "a filter, e.g. name == SET_VRING_ADDR (Enter holds, empty stops; Esc cancels)",
    )


def set_filter(app: ListActions, text: str) -> None:
    """Hold what matches ``text`` from now on (empty: stop, and release what is held)."""
    if app.control is None:
        return
    if text:
        try:
            compile_filter(text)  # said here, in the TUI, before the proxy gets it
        except FilterError as exc:
            app.notify(f"intercept filter: {exc}", severity="error", markup=False)
            return
    error = app.control.send({"cmd": "set-intercept", "filter": text})
    if error:
        app.notify(error, severity="error", markup=False)
    elif text:
        app.notify(f"holding: {text} (a accept, e edit, d drop, A all)", markup=False)
    else:
        app.notify("intercept off; held messages released", timeout=2)


def decide(app: ListActions, how: str) -> None:
    """``a``/``e``/``d`` on the selected held message (or the oldest one), ``A`` on all."""
    if app.control is None:
        return
    if how == "accept-all":
        _send(app, {"cmd": "accept-all"})
        return
    holds: Holds = app.holds
    number = holds.at(app.message_list.selected_row)
    if number is None:
        number = holds.oldest()
    if number is None:
        app.notify("nothing is held", severity="warning")
        return
    if how != "edit":
        _send(app, {"cmd": how, "id": number})
        return
    row = holds.row_of(number)
    msgs = [m for m in app.model.messages(row) if m.kind == "message"] if row is not None else []
    if row is None or not msgs:
        app.notify(f"held #{number} is not decoded yet", severity="warning")
        return

    def done(payload: dict | None) -> None:
        if payload is not None:
            _send(app, {"cmd": "edit", "id": number, "payload": payload})

    app.push_screen(EditScreen(number, msgs[0], bytes(app.model.frame(row).data)), done)


def _send(app: ListActions, cmd: dict[str, Any]) -> None:
    error = app.control.send(cmd) if app.control is not None else None
    if error:
        app.notify(error, severity="error", markup=False)


# -- the edit form -------------------------------------------------------------------------------
def _shown(key: str, value: Any, layout: str | None = None) -> str:
    """A field as its input shows it: numbers by numtext's rule, strings escaped (the
    decoder's names and hex are printable, so they read back as they are), the rest JSON
    (which writes control characters as ``\\u`` escapes)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return number_text("payload." + key, value, layout)
    if isinstance(value, str):
        return safe_text(value)
    return json.dumps(value)


def _parsed(text: str, old: Any) -> Any:
    """A form value back in the decoder's type (ints in any base, JSON for the rest)."""
    text = text.strip()
    if isinstance(old, bool) or old is None:
        return json.loads(text)
    if isinstance(old, int):
        return int(text, 0)
    if isinstance(old, str):
        if not text.isprintable():
            raise ValueError("non-printable characters")
        return text
    return json.loads(text)


def edited_payload(
    payload: dict[str, Any], texts: dict[str, str], shown: dict[str, str] | None = None
) -> dict[str, Any]:
    """``payload`` with the form's texts put back (ValueError names the bad field).

    A text still as ``shown`` keeps its value as it was: an escaped string the user did
    not touch goes back unchanged, not as its escapes.
    """
    out = dict(payload)
    for key, text in texts.items():
        if shown is not None and shown.get(key) == text:
            continue
        try:
            out[key] = _parsed(text, payload.get(key))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{key}: {exc}") from None
    return out


def _unprintable(value: Any) -> bool:
    return isinstance(value, str) and not value.isprintable()


class EditScreen(ModalScreen[dict | None]):
    """A held message's decoded fields, one input each; Enter sends, Esc cancels.

    Dismissed with the new payload (already checked to re-encode), or None.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    EditScreen { align: center middle; }
    EditScreen > Vertical { width: 80; max-height: 90%; height: auto; border: round $accent;
                            background: $surface; padding: 0 1; }
    EditScreen VerticalScroll { height: auto; max-height: 20; }
    EditScreen .field { height: 1; }
    EditScreen .field Label { width: 24; }
    EditScreen Input, EditScreen Input:focus { height: 1; width: 1fr; border: none; padding: 0 1; }
    EditScreen Input:focus { background: $boost; }
    EditScreen #edit-error { color: $error; height: auto; }
    """

    def __init__(self, number: int, msg: Any, data: bytes) -> None:
        super().__init__()
        self.number = number
        self.msg = msg
        self.data = data
        self.keys = list(msg.payload)[:MAX_FORM_FIELDS]
        self.shown = {k: _shown(k, msg.payload[k], msg.layout) for k in self.keys}
        #: Fields that held control or format characters: shown escaped, flagged, and sent
        #: back as they were unless edited (then only printable text is taken).
        self.escaped = [k for k in self.keys if _unprintable(msg.payload[k])]

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = safe_text(f"edit held #{self.number}: {self.msg.name}")
            v.border_subtitle = "Enter sends it on edited, Esc cancels"
            with VerticalScroll():
                for i, key in enumerate(self.keys):
                    with Horizontal(classes="field"):
                        mark = " !" if key in self.escaped else ""
                        yield Label(safe_text(key) + mark, markup=False)
                        yield Input(self.shown[key], id=f"edit-{i}", select_on_focus=False)
            if not self.keys:
                yield Static("(this message has no payload fields to edit)")
            yield Static(self._escaped_note(), id="edit-error", markup=False)

    def _escaped_note(self) -> str:
        if not self.escaped:
            return ""
        names = safe_text(", ".join(self.escaped))[:200]
        return f"! non-printable characters shown escaped in: {names} (sent as they were unless edited)"

    def on_mount(self) -> None:
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def texts(self) -> dict[str, str]:
        return {key: self.query_one(f"#edit-{i}", Input).value for i, key in enumerate(self.keys)}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            payload = edited_payload(self.msg.payload, self.texts(), self.shown)
            reencode(self.msg, self.data, payload)  # the engine will do the same
        except Exception as exc:  # noqa: BLE001 - shown in the form, the user fixes it
            self.query_one("#edit-error", Static).update(safe_text(str(exc))[:300])
            return
        self.dismiss(payload)

    def action_cancel(self) -> None:
        self.dismiss(None)
