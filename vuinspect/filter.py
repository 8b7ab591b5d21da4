"""The one filter language, shared by ``vuinspect read --filter`` and the TUI filter bar.

Wireshark-like and small::

    name == SET_MEM_TABLE and conn == 2
    problems                      # any message with a problem
    problems == reply_flags       # lists match if any element does
    payload.num > 256 or latency_us >= 1000
    not reply and channel == backend
    name ~ VRING                  # ~ / contains: substring (case-insensitive)
    name matches "^SET_VRING_(KICK|CALL)$"
    payload.regions.memory_size > 0x10000000
    fds ~ memfd

Fields: frame, index, ts (seconds), ts_ns, conn, channel, dir, kind, request,
name, reply, need_reply, flags, size, layout, fds, latency_us, reply_to,
reply_in, problems, and ``payload.<field>`` (see ``vuinspect read --json``).
Right-hand barewords are literals; request names also match their old names
(``SET_SLAVE_REQ_FD``).  Errors carry the character position for the TUI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .message import Message
from .protocol.requests import by_name

Predicate = Callable[[Message], bool]

FIELDS = ("frame", "index", "ts", "ts_ns", "conn", "channel", "dir", "direction", "kind",
          "request", "name", "reply", "need_reply", "flags", "size", "layout", "fds",
          "latency_us", "reply_to", "reply_in", "problems", "problem")
OPS = ("==", "!=", "<=", ">=", "<", ">", "~", "contains", "matches", "eq", "ne", "lt", "le",
       "gt", "ge")
_OP_ALIAS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
             "contains": "~"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op>==|!=|<=|>=|<|>|~|&&|\|\||!)
  | (?P<paren>[()])
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z0-9_.:\-/+]+)
""", re.VERBOSE)


class FilterError(ValueError):
    """A filter that does not parse; ``position`` is the offending character."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.message = message
        self.position = position


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "str":
                value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
            elif kind == "word" and value.lower() in ("and", "or", "not") or kind == "word" and value.lower() in OPS:
                kind, value = "op", value.lower()
            elif kind == "op":
                value = {"&&": "and", "||": "or", "!": "not"}.get(value, value)
            out.append((kind, value, pos))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


def field_value(msg: Message, path: str) -> Any:
    """Resolve a field path on a message; None when absent."""
    head, _, rest = path.partition(".")
    if head == "payload":
        return _walk(msg.info if msg.is_event else msg.payload, rest.split(".") if rest else [])
    if head in ("problems", "problem"):
        return msg.problem_codes
    if head in ("dir", "direction"):
        return msg.direction
    if head == "reply":
        return msg.is_reply
    if head == "ts":
        return msg.ts_ns / 1e9
    if head == "fds":
        return list(msg.fds)
    return getattr(msg, head, None)


def _walk(obj: Any, parts: list[str]) -> Any:
    for i, part in enumerate(parts):
        if isinstance(obj, list):
            if part.isdigit():
                idx = int(part)
                obj = obj[idx] if idx < len(obj) else None
            else:  # any element: collect the field from each item
                return [v for item in obj if (v := _walk(item, parts[i:])) is not None]
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
        if obj is None:
            return None
    return obj


def _literal(token: str, quoted: bool) -> Any:
    if quoted:
        return token
    low = token.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(token, 0)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token


def _compare(value: Any, op: str, lit: Any, field: str) -> bool:
    if isinstance(value, list):
        return any(_compare(v, op, lit, field) for v in value)
    if value is None:
        return op == "!=" and lit is not None
    if op == "~":
        return str(lit).lower() in str(value).lower()
    if op == "matches":
        return re.search(str(lit), str(value)) is not None
    if isinstance(value, str):
        a: Any = value.lower()
        b: Any = str(lit).lower()
        if field == "name" and isinstance(lit, str):
            spec = by_name(lit)
            if spec is not None:
                b = spec.name.lower()
    elif isinstance(value, bool):
        a, b = value, lit if isinstance(lit, bool) else bool(lit)
    elif isinstance(lit, (int, float)) and not isinstance(lit, bool):
        a, b = value, lit
    else:
        a, b = str(value).lower(), str(lit).lower()
    try:
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                ">=": a >= b}[op]
    except TypeError:
        return False


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_()
        kind, value, pos = self.peek()
        if kind != "end":
            raise FilterError(f"unexpected {value!r}", pos)
        return pred

    def or_(self) -> Predicate:
        left = self.and_()
        while self.peek()[:2] == ("op", "or"):
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda m: a(m) or b(m))(left, right)
        return left

    def and_(self) -> Predicate:
        left = self.not_()
        while self.peek()[:2] == ("op", "and"):
            self.take()
            right = self.not_()
            left = (lambda a, b: lambda m: a(m) and b(m))(left, right)
        return left

    def not_(self) -> Predicate:
        if self.peek()[:2] == ("op", "not"):
            self.take()
            inner = self.not_()
            return lambda m: not inner(m)
        return self.primary()

    def primary(self) -> Predicate:
        kind, value, pos = self.take()
        if kind == "paren" and value == "(":
            inner = self.or_()
            k2, v2, p2 = self.take()
            if v2 != ")":
                raise FilterError("missing ')'", p2)
            return inner
        if kind != "word":
            raise FilterError("expected a field name" if kind != "end" else
                              "expression ends too early", pos)
        field = value
        head = field.split(".", 1)[0]
        if head not in FIELDS and head != "payload":
            raise FilterError(f"unknown field {field!r} (fields: {', '.join(FIELDS)}, "
                              "payload.<name>)", pos)
        if head != "payload" and "." in field:
            raise FilterError(f"{head} has no sub-fields", pos)
        if self.peek()[0] != "op" or self.peek()[1] in ("and", "or", "not"):
            return lambda m: bool(field_value(m, field))
        _, op, op_pos = self.take()
        op = _OP_ALIAS.get(op, op)
        if op not in ("==", "!=", "<", "<=", ">", ">=", "~", "matches"):
            raise FilterError(f"unexpected operator {op!r}", op_pos)
        k3, lit_text, p3 = self.take()
        if k3 not in ("word", "str"):
            raise FilterError("expected a value", p3)
        lit = _literal(lit_text, k3 == "str")
        if op == "matches":
            try:
                re.compile(str(lit))
            except re.error as exc:
                raise FilterError(f"bad regular expression: {exc}", p3) from None
        return lambda m: _compare(field_value(m, field), op, lit, head)


def compile_filter(text: str) -> Predicate:
    """Compile ``text``; an empty filter matches everything."""
    if not text.strip():
        return lambda m: True
    return _Parser(text).parse()
