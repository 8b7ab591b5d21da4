"""The one filter language, shared by ``read --filter``, ``view --filter`` and the TUI filter bar.

Wireshark-like and small::

    name == SET_MEM_TABLE and conn == 2
    problems                      # a message with a warning or an error
    problems == nonzero_padding   # lists match if any element does (any severity)
    severity == note
    payload.num > 256 or latency_us >= 1000
    not reply and channel == backend
    name ~ VRING                  # ~ / contains: substring (case-insensitive)
    name matches "^SET_VRING_(KICK|CALL)$"
    payload.regions.memory_size > 0x10000000
    fds ~ memfd

The names, their types, allowed values and old aliases come from
:mod:`vuinspect.fields` (``vuinspect fields`` lists them).  A name, value or
type that cannot match is an error with a suggestion, never a silent empty
result.  Right-hand barewords are literals; request names also match their old
names (``SET_SLAVE_REQ_FD``).  Errors carry the character position for the TUI.

Parsing is a shunting-yard over an explicit stack and ``and``/``or`` chains
compile to flat lists, so neither recurses per term; parentheses may nest
:data:`MAX_DEPTH` deep.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from . import fields as F
from .message import Message, parse_ts, ts_text
from .protocol.requests import by_name

Predicate = Callable[[Message], bool]

MAX_DEPTH = 64  # nested parentheses
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "~", "matches")
OPS = (
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "~",
    "contains",
    "matches",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
)
_OP_ALIAS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "contains": "~"}
_ORDERING = ("<", "<=", ">", ">=")
_PREC = {"or": 1, "and": 2, "not": 3}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op>==|!=|<=|>=|<|>|~|&&|\|\||!)
  | (?P<paren>[()])
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z0-9_.:\-/+]+)
""",
    re.VERBOSE,
)
_UNKNOWN_NAME = re.compile(r"(BACKEND_)?UNKNOWN_\d+$", re.IGNORECASE)

# A parsed expression: ("leaf", predicate) | ("not", node) | ("and"|"or", [nodes]).
Node = tuple[str, Any]


class FilterError(ValueError):
    """A filter that does not parse or cannot match; ``position`` is the offending character."""

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
            hint = "; did you mean ==?" if text[pos] == "=" else ""  # the C / SQL habit
            raise FilterError(f"unexpected character {text[pos]!r}{hint}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "str":
                try:
                    value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
                except UnicodeDecodeError:
                    raise FilterError("bad escape in string", pos) from None
            elif kind == "word" and value.lower() in ("and", "or", "not", *OPS):
                kind, value = "op", value.lower()
            elif kind == "op":
                value = {"&&": "and", "||": "or", "!": "not"}.get(value, value)
            out.append((kind, value, pos))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


def suggest(word: str, choices: Any) -> str:
    """``"; did you mean X?"`` for the closest of ``choices`` (also in upper case), or ``""``."""
    best = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not best:
        best = difflib.get_close_matches(word.upper(), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {best[0]}?" if best else ""


def field_hint(word: str) -> str:
    """The did-you-mean for an unknown field name (``payload.<path>`` among the payload's)."""
    if word.startswith("payload."):
        return suggest(word[8:], F.PAYLOAD).replace("mean ", "mean payload.")
    known = [f.name for f in F.FIELDS] + list(F.ALIASES) + ["payload.<name>"]
    return suggest(word, known)


# -- values -----------------------------------------------------------------------------------

_GETTERS: dict[str, Callable[[Message], Any]] = {
    "ts": lambda m: ts_text(m.ts_ns),  # the NDJSON's text (-e ts, ~, matches)
    "fds": lambda m: list(m.fds),
    "problems": lambda m: m.problem_codes,
    "severity": lambda m: m.severity,
}


#: What an ordering or equality compares where it is not the value shown: ``ts`` to the
#: nanosecond (its literal is parsed into ns by :func:`~vuinspect.message.parse_ts`).
_COMPARED: dict[str, Callable[[Message], Any]] = {"ts": lambda m: m.ts_ns}


def field_value(msg: Message, path: str) -> Any:
    """Resolve a field path (canonical name, alias or ``payload.<path>``); None when absent."""
    head, _, rest = path.partition(".")
    if head == "payload":
        return _walk(msg.info if msg.is_event else msg.payload, rest.split(".") if rest else [])
    name = F.canonical(head) or head
    getter = _GETTERS.get(name)
    return getter(msg) if getter is not None else getattr(msg, name, None)


def _walk(obj: Any, parts: list[str]) -> Any:
    for i, part in enumerate(parts):
        if isinstance(obj, list):
            if part.isdigit():
                idx = int(part)
                obj = obj[idx] if idx < len(obj) else None
            else:  # any element: collect the field from each item (items are flat dicts)
                rest = parts[i:]
                return [v for item in obj if (v := _walk_flat(item, rest)) is not None]
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
        if obj is None:
            return None
    return obj


def _walk_flat(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
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


def _compare(value: Any, op: str, lit: Any, low: str) -> bool:
    """``value op lit``; ``low`` is ``str(lit).lower()`` computed once."""
    if isinstance(value, list):
        return any(_compare(v, op, lit, low) for v in value)  # items are scalars
    if value is None:
        return op == "!=" and lit is not None
    if op == "~":
        return low in str(value).lower()
    if op == "matches":
        return lit.search(str(value)) is not None
    if isinstance(value, str):
        a: Any = value.lower()
        b: Any = low
    elif isinstance(value, bool):
        a, b = value, lit if isinstance(lit, bool) else bool(lit)
    elif isinstance(lit, (int, float)) and not isinstance(lit, bool):
        a, b = value, lit
    else:
        a, b = str(value).lower(), low
    try:
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b
    except TypeError:
        return False


# -- checking a comparison against the field table ----------------------------------------------


def _is_number(lit: Any) -> bool:
    return isinstance(lit, (int, float)) and not isinstance(lit, bool)


def _check_top(name: str, op: str, lit: Any, pos: int, text: str) -> Any:
    """Validate ``name op lit`` for a top-level field (``text``: the literal as written);
    returns the literal to compare with."""
    spec = F.BY_NAME[name]
    if op in ("~", "matches"):
        return lit
    if spec.type == "time":
        ns = parse_ts(text)
        if ns is None:
            raise FilterError(
                f"{name} is seconds since the epoch, at most 9 decimals "
                f"(1764000000.123456789); {text!r} is not",
                pos,
            )
        return ns
    if spec.type in ("int", "float"):
        if name == "conn" and isinstance(lit, str) and re.fullmatch(r"[cC]\d+", lit):
            return int(lit[1:])
        if name == "request" and isinstance(lit, str):
            return lit  # a request name: compared by name in _term
        if not _is_number(lit):
            raise FilterError(f"{name} is a number; {lit!r} is not", pos)
        return lit
    if spec.type == "bool":
        if isinstance(lit, bool) or lit in (0, 1):
            if op in _ORDERING:
                raise FilterError(f"{name} is true or false: use == or !=", pos)
            return bool(lit)
        raise FilterError(f"{name} is true or false; {lit!r} is neither", pos)
    if op in _ORDERING:
        raise FilterError(f"{name} is text: use ==, !=, ~ or matches", pos)
    text = str(lit)
    if name == "name":
        if (req := by_name(text)) is not None:
            return req.name
        if text.upper() in spec.values or _UNKNOWN_NAME.match(text):
            return text
        raise FilterError(f"unknown request name {text!r}{suggest(text, spec.values)}", pos)
    if spec.values and text.lower() not in {v.lower() for v in spec.values}:
        what = "problem code" if name == "problems" else f"{name} value"
        hint = (
            f" (one of: {', '.join(spec.values)})"
            if len(spec.values) <= 6
            else suggest(text, spec.values)
        )
        raise FilterError(f"unknown {what} {text!r}{hint}", pos)
    return lit


def _check_payload(path: str, op: str, lit: Any, pos: int) -> None:
    types = F.payload_types(path)
    if types is None:
        raise FilterError(f"unknown field 'payload.{path}'{field_hint('payload.' + path)}", pos)
    if op in ("~", "matches"):
        return
    if _is_number(lit) and not types & {"int", "float", "bool"}:
        raise FilterError(f"payload.{path} is text; {lit!r} is a number", pos)
    if isinstance(lit, str) and not types & {"str", "list"}:
        hint = f" (try payload.{path}_name)" if F.payload_types(path + "_name") else ""
        raise FilterError(f"payload.{path} is a number; {lit!r} is not{hint}", pos)
    if op in _ORDERING and not types & {"int", "float"}:
        raise FilterError(f"payload.{path} is not a number: use ==, !=, ~ or matches", pos)


def _field_name(word: str, pos: int) -> tuple[str, str]:
    """(canonical path, head) of a field word, or a FilterError with a suggestion.

    Wireshark's spelling ``vhost_user.<name>`` is the same field."""
    word = word.removeprefix(F.WIRESHARK_PREFIX)
    head, dot, rest = word.partition(".")
    if head == "payload":
        if not rest:
            return "payload", "payload"
        return word, head
    name = F.canonical(head)
    if name is None:
        raise FilterError(f"unknown field {word!r}{field_hint(head)}", pos)
    if dot:
        raise FilterError(f"{name} has no sub-fields", pos)
    return name, name


def _bare(path: str, pos: int) -> Predicate:
    if path == "problems":
        return lambda m: m.severity in ("error", "warning")
    if path.startswith("payload."):
        _check_payload(path[8:], "~", None, pos)  # only the name is checked
    getter = _getter(path)
    return lambda m: bool(getter(m))


def _getter(path: str) -> Callable[[Message], Any]:
    if path.startswith("payload") or path in _GETTERS:
        return lambda m: field_value(m, path)
    return lambda m: getattr(m, path, None)


def _term(toks: list[tuple[str, str, int]], i: int) -> tuple[Predicate, int]:
    """Parse ``field [op value]`` at ``toks[i]``; returns the predicate and the next index."""
    _, word, pos = toks[i]
    path, head = _field_name(word, pos)
    kind, value, op_pos = toks[i + 1]
    if kind != "op" or value in ("and", "or", "not"):
        return _bare(path, pos), i + 1
    op = _OP_ALIAS.get(value, value)
    if op not in COMPARISONS:
        raise FilterError(f"unexpected operator {op!r}", op_pos)
    k3, lit_text, p3 = toks[i + 2]
    if k3 not in ("word", "str"):
        raise FilterError(
            "expected a value" if k3 != "end" else f"expected a value after {op!r}", p3
        )
    # (~ and matches take the text as written: 0010 or .000000003 is no number to them)
    lit = lit_text if op in ("~", "matches") else _literal(lit_text, k3 == "str")
    if path == "payload":
        raise FilterError("name a payload field: payload.<name>", pos)
    if head == "payload":
        _check_payload(path[8:], "~", None, pos)  # the name, at the name
        _check_payload(path[8:], op, lit, p3)
    else:
        lit = _check_top(path, op, lit, p3, lit_text)
    if op == "matches":
        try:
            lit = re.compile(str(lit))
        except re.error as exc:
            raise FilterError(f"bad regular expression: {exc}", p3) from None
    low = str(lit).lower()
    if path == "request" and isinstance(lit, str):  # request == SET_MEM_TABLE: by name
        spec = by_name(lit)
        if spec is None:
            raise FilterError(
                f"unknown request name {lit!r}{suggest(lit, F.BY_NAME['name'].values)}", p3
            )
        name = spec.name.lower()
        return (lambda m: (m.name.lower() == name) == (op == "==")), i + 3
    getter = _COMPARED.get(path) if op not in ("~", "matches") else None
    if getter is None:
        getter = _getter(path)
    return (lambda m: _compare(getter(m), op, lit, low)), i + 3


# -- parsing: shunting-yard with flattening ---------------------------------------------------


def _apply(op: str, out: list[Node]) -> None:
    if op == "not":
        node = out.pop()
        out.append(node[1] if node[0] == "not" else ("not", node))
        return
    right = out.pop()
    left = out[-1]
    if left[0] != op:  # start a chain; a chain is extended in place: linear in its length
        left = out[-1] = (op, [left])
    if right[0] == op:
        left[1].extend(right[1])
    else:
        left[1].append(right)


def parse(text: str) -> Node:
    """Parse ``text`` into a flat tree; raises FilterError."""
    toks = _tokens(text)
    out: list[Node] = []
    ops: list[tuple[str, int]] = []  # operators and '(' with their positions
    depth = 0
    i = 0
    expect_operand = True
    while True:
        kind, value, pos = toks[i]
        if expect_operand:
            if kind == "op" and value == "not":
                ops.append(("not", pos))
                i += 1
            elif kind == "paren" and value == "(":
                depth += 1
                if depth > MAX_DEPTH:
                    raise FilterError(
                        f"filter too deep (more than {MAX_DEPTH} nested parentheses)", pos
                    )
                ops.append(("(", pos))
                i += 1
            elif kind == "word":
                pred, i = _term(toks, i)
                out.append(("leaf", pred))
                expect_operand = False
            else:
                raise FilterError(
                    "expression ends too early" if kind == "end" else "expected a field name", pos
                )
            continue
        if kind == "op" and value in ("and", "or"):
            while ops and ops[-1][0] != "(" and _PREC[ops[-1][0]] >= _PREC[value]:
                _apply(ops.pop()[0], out)
            ops.append((value, pos))
            expect_operand = True
        elif kind == "paren" and value == ")":
            while ops and ops[-1][0] != "(":
                _apply(ops.pop()[0], out)
            if not ops:
                raise FilterError("unexpected ')'", pos)
            ops.pop()
            depth -= 1
        elif kind == "end":
            while ops:
                op, op_pos = ops.pop()
                if op == "(":
                    raise FilterError("missing ')'", pos)
                _apply(op, out)
            return out[0]
        else:
            raise FilterError(f"unexpected {value!r}", pos)
        i += 1


def _compile(node: Node) -> Predicate:
    """A predicate for ``node``; recursion follows parentheses only (at most MAX_DEPTH)."""
    kind, arg = node
    if kind == "leaf":
        return arg
    if kind == "not":
        inner = _compile(arg)
        return lambda m: not inner(m)
    preds = tuple(_compile(n) for n in arg)
    if kind == "and":

        def all_of(m: Message) -> bool:
            return all(p(m) for p in preds)

        return all_of

    def any_of(m: Message) -> bool:
        return any(p(m) for p in preds)

    return any_of


def first_match(
    pred: Predicate, msgs: Iterable[Message], kind: str | None = None
) -> Message | None:
    """The first of ``msgs`` (of ``kind`` only, when given) that ``pred`` matches, or None.

    A message the predicate cannot judge (it raises) does not match: the rows of a
    view, the rules and the intercept never fail on a value a filter cannot compare.
    """
    for m in msgs:
        if kind is not None and m.kind != kind:
            continue
        try:
            if pred(m):
                return m
        except Exception:  # noqa: BLE001 - a filter that cannot judge a message: no match
            continue
    return None


def compile_filter(text: str) -> Predicate:
    """Compile ``text``; an empty filter matches everything.  Raises FilterError."""
    if not text.strip():
        return lambda m: True
    return _compile(parse(text))


def completions(prefix: str) -> list[str]:
    """What may follow ``prefix`` (the text typed so far) in the filter bar, for completion.

    After a field and ``==``: its known values (request names, problem codes,
    channels...); otherwise the field names, aliases and payload paths that
    start with the last word.
    """
    m = re.search(r"([A-Za-z0-9_.]+)\s*(==|!=|eq|ne)\s*([A-Za-z0-9_]*)$", prefix)
    if m:
        name = F.canonical(m.group(1))
        spec = F.BY_NAME.get(name or "")
        if spec is not None and spec.values:
            word = m.group(3).lower()
            return [v for v in spec.values if v.lower().startswith(word)]
    last = re.search(r"[A-Za-z0-9_.]*$", prefix)
    return F.completions(last.group() if last else "")
