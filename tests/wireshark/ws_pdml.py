"""Run real tshark with the generated dissector and read its PDML back as comparable views.

A view is what both decoders must agree on for one message: request, name,
flags, size, reply (by direction), layout, fd list, payload (field names =
layout field names plus the derived ``_name``/``_names``/bitfield keys),
reply_to/reply_in and the problem codes.  ``python_views`` makes the same
views from ``vuinspect.pipeline`` + ``vuinspect.render.to_json``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vuinspect.capture import CaptureWriter, read_frames
from vuinspect.fields import EVENT_KEYS
from vuinspect.frames import Frame
from vuinspect.pipeline import Pipeline
from vuinspect.render import to_json
from vuinspect.wireshark.fields import abbrev_roles, build_registry

REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "dissectors" / "vhost_user.lua"
_REG = build_registry()
ROLES = abbrev_roles(_REG)
CTORS: dict[str, str] = {}
for _f in _REG.fields.values():
    CTORS.setdefault(_f.abbrev, _f.ctor)
_INTS = {"uint8", "uint16", "uint32", "uint64", "int32", "int64"}


def tshark_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if home is not None:
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return env


_EMPTY_HOME = Path(tempfile.mkdtemp(prefix="vu-tshark-home-"))


def tshark(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """tshark with an empty personal folder unless ``env`` says otherwise: an installed copy
    of the dissector must not stand in for the one under test."""
    return subprocess.run(
        ["tshark", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or tshark_env(_EMPTY_HOME),
        check=False,
    )


def write_capture(path: Path, frames: list[Frame], big_endian: bool = False) -> Path:
    with CaptureWriter(path, big_endian=big_endian) as w:
        for fr in frames:
            w.write(fr)
    return path


@dataclass
class Dissection:
    views: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    experts: list[tuple[int, str]] = field(default_factory=list)  # (frame, code)
    conns: dict[int, int] = field(default_factory=dict)  # frame -> conn
    malformed: list[int] = field(default_factory=list)
    lua_errors: list[str] = field(default_factory=list)
    stderr: str = ""


def dissect(
    capture: Path, *extra: str, two_pass: bool = True, lua: Path | None = LUA
) -> Dissection:
    args = ["-r", str(capture), "-T", "pdml"]
    if lua is not None:
        args += ["-X", f"lua_script:{lua}"]
    if two_pass:
        args.append("-2")
    proc = tshark(*args, *extra)
    out = Dissection(stderr=proc.stderr)
    out.lua_errors += [ln for ln in proc.stderr.splitlines() if "Lua" in ln and "rror" in ln]
    if proc.returncode != 0:
        raise AssertionError(f"tshark failed ({proc.returncode}): {proc.stderr[-2000:]}")
    root = ET.fromstring(proc.stdout)
    for pkt in root.iter("packet"):
        number = int(
            next(f for f in pkt.iter("field") if f.get("name") == "frame.number").get("show")
        )
        for el in pkt.iter():
            name = el.get("name", "")
            if name == "_ws.malformed":
                out.malformed.append(number)
            text = (el.get("showname") or "") + (el.get("show") or "")
            if "Lua Error" in text:
                out.lua_errors.append(f"frame {number}: {text}")
        protos = [p for p in pkt.findall("proto") if p.get("name") == "vhost_user"]
        i = 0
        for el in pkt.iter("field"):
            if el.get("name") == "vhost_user.conn":
                out.conns[number] = int(el.get("show"))
                break
        for proto in protos:
            view = proto_view(proto)
            out.experts += [(number, c) for c in view["problems"]]
            if view["kind"] == 0 and "name" not in view:
                continue  # only the start of a message that a later frame completes
            out.views[(number, i)] = view
            i += 1
    return out


def _value(el: ET.Element, ctor: str) -> Any:
    show = el.get("show", "")
    if ctor in _INTS or ctor in ("framenum", "bool"):
        try:  # one abbreviation may be a bool bitfield and a number (vhost_user.log)
            return int(show, 0)
        except ValueError:
            return show in ("True",)
    if ctor == "bytes":
        return (el.get("value") or "").lower()
    return show


def _enum_name(el: ET.Element) -> str:
    m = re.match(r"^[^:]*: (.*) \((-?\d+)\)$", el.get("showname", ""))
    return m.group(1) if m else ""


def _walk_payload(el: ET.Element, out: dict[str, Any]) -> None:
    for child in el.findall("field"):
        name = child.get("name", "")
        role, key = ROLES.get(name, ("", ""))
        if role == "payload":
            out[key] = _value(child, CTORS[name])
            label = _enum_name(child) if CTORS[name] in _INTS else ""
            if label:
                out[key + "_name"] = label
            _walk_payload(child, out)
        elif role == "bits":
            if child.get("show") in ("1", "True"):
                out.setdefault(key + "_names", []).append(name.rsplit(".", 1)[1])
        elif role == "array":
            out[key] = []
            for item in child.findall("field"):
                d: dict[str, Any] = {}
                _walk_payload(item, d)
                out[key].append(d)


def proto_view(proto: ET.Element) -> dict[str, Any]:
    view: dict[str, Any] = {"fds": [], "problems": [], "problem_fields": [], "payload": {}}
    fields = {}
    for el in proto.iter("field"):
        name = el.get("name", "")
        if name.startswith("vhost_user.expert."):
            view["problems"].append(name.removeprefix("vhost_user.expert."))
        elif name == "vhost_user.fds":
            view["fds"].append(el.get("show"))
        elif name == "vhost_user.fd":  # the old name, an alias
            view.setdefault("old_fds", []).append(el.get("show"))
        elif name == "vhost_user.problems":
            view["problem_fields"].append(el.get("show"))
        else:
            fields.setdefault(name, el)
    kind = int(fields["vhost_user.kind"].get("show")) if "vhost_user.kind" in fields else None
    view["kind"] = kind
    if "vhost_user.event.json" in fields:  # event keys are vhost_user.payload.<key>
        view["event"] = {
            key: fields[f"vhost_user.payload.{key}"].get("show")
            for key in EVENT_KEYS
            if f"vhost_user.payload.{key}" in fields
        }
        view["old_event"] = {  # the old names, hidden aliases
            k.removeprefix("vhost_user.event."): el.get("show")
            for k, el in fields.items()
            if k.startswith("vhost_user.event.") and k != "vhost_user.event.json"
        }
    for key, abbrev in (
        ("request", "vhost_user.request"),
        ("old_request", "vhost_user.backend_request"),
        ("flags", "vhost_user.flags"),
        ("size", "vhost_user.size"),
        ("reply_to", "vhost_user.reply_to"),
        ("reply_in", "vhost_user.reply_in"),
        ("old_reply_to", "vhost_user.response_to"),
        ("old_reply_in", "vhost_user.response_in"),
    ):
        if abbrev in fields:
            view[key] = int(fields[abbrev].get("show"), 0)
    for key, abbrev in (
        ("name", "vhost_user.name"),
        ("layout", "vhost_user.layout"),
        ("severity", "vhost_user.severity"),
    ):
        if abbrev in fields:
            view[key] = fields[abbrev].get("show")
    for key, abbrev in (
        ("reply", "vhost_user.reply"),
        ("old_reply", "vhost_user.is_reply"),
        ("need_reply", "vhost_user.need_reply"),
    ):
        if abbrev in fields:
            view[key] = fields[abbrev].get("show") in ("1", "True")
    if "vhost_user.latency_us" in fields:
        view["latency_us"] = float(fields["vhost_user.latency_us"].get("show"))
    if "vhost_user.response_time" in fields:
        view["old_latency_us"] = float(fields["vhost_user.response_time"].get("show")) * 1e6
    _walk_payload(proto, view["payload"])
    return view


# -- the Python side ---------------------------------------------------------------------------


def _norm_names(names: list[str]) -> list[str]:
    return [re.sub(r"^bit_(\d+)$", r"bit\1", n.lower()) for n in names]


def normalize_payload(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in p.items():
        if k.endswith("_names"):
            out[k] = sorted(_norm_names(v))
        elif k.endswith("_name") and isinstance(v, str) and v.startswith("unknown("):
            out[k] = "Unknown"
        elif isinstance(v, list):
            out[k] = [normalize_payload(i) for i in v]
        else:
            out[k] = v
    return out


def python_views(frames: list[Frame] | Path) -> list[dict[str, Any]]:
    source = read_frames(frames) if isinstance(frames, Path) else frames
    messages = list(Pipeline().run(source))  # replies set reply_in on earlier requests
    return [to_json(m) for m in messages]


def drop_empty_names(p: dict[str, Any]) -> dict[str, Any]:
    """Bit lists are only shown when a bit is set; an empty list and no list are the same."""
    out = {}
    for k, v in p.items():
        if k.endswith("_names"):
            if v:
                out[k] = sorted(v)
            continue
        out[k] = (
            [drop_empty_names(i) for i in v]
            if isinstance(v, list) and v and isinstance(v[0], dict)
            else v
        )
    return out


#: vhost_user.kind's values, in order.
KINDS = ("data", "open", "close", "note", "ring", "notify")


def compare(py: list[dict[str, Any]], lua: Dissection) -> list[str]:
    """Differences between the Python messages and the tshark views, one line each."""
    errors: list[str] = []
    seen: dict[int, int] = {}
    matched = set()
    truncated = {"truncated_header", "truncated_payload"}
    for m in py:
        frame = m["frame"]
        codes = {p["code"] for p in m["problems"]} & truncated
        if codes:  # flushed at close: the Lua side reports it on the close frame
            on_conn = {c for n, c in lua.experts if lua.conns.get(n) == m["conn"]}
            if not codes <= on_conn:
                errors.append(
                    f"frame {frame} {m['name']}: {codes} not reported for conn {m['conn']}"
                )
            continue
        i = seen.get(frame, 0)
        seen[frame] = i + 1
        v = lua.views.get((frame, i))
        where = f"frame {frame}#{i} {m['name']}"
        if v is None:
            errors.append(f"{where}: not in tshark output")
            continue
        matched.add((frame, i))
        if m["kind"] in ("ring", "notify"):
            # the sample as the file holds it; what the reader derives from the series
            # (backend_stalled and the other diagnoses, the in-flight chains, the findings a
            # sample resolves) is Python's alone (test_ring_and_notify_fields_agree... too)
            if v["kind"] != KINDS.index(m["kind"]):
                errors.append(f"{where}: kind {v['kind']}")
            derived = ("problems", "chains", "resolved")
            want = {
                k: int(x) if isinstance(x, bool) else x
                for k, x in m["payload"].items()
                if k not in derived
            }
            if v.get("payload") != want:
                errors.append(f"{where}: payload {v.get('payload')} != {want}")
            continue
        if m["kind"] in ("open", "close", "note"):
            if v["kind"] != KINDS.index(m["kind"]):
                errors.append(f"{where}: kind {v['kind']}")
            if v.get("old_event") != v.get("event"):
                errors.append(f"{where}: old event fields {v.get('old_event')} != {v.get('event')}")
            for k in ("label", "reason", "text", "device"):
                if k in m["payload"] and v.get("event", {}).get(k) != str(m["payload"][k]):
                    errors.append(
                        f"{where}: event {k} {v.get('event', {}).get(k)!r} != {m['payload'][k]!r}"
                    )
            continue
        py_side = {k: m[k] for k in ("name", "fds")}
        lua_side = {k: v.get(k) for k in ("name", "fds")}
        py_side["old_fds"] = m["fds"]
        lua_side["old_fds"] = v.get("old_fds", [])
        if m["kind"] != "raw":
            py_side |= {
                k: m[k]
                for k in ("request", "flags", "size", "reply", "layout", "reply_to", "reply_in")
            }
            lua_side |= {
                k: v.get(k)
                for k in ("request", "flags", "size", "reply", "layout", "reply_to", "reply_in")
            }
            py_side["payload"] = drop_empty_names(normalize_payload(m["payload"]))
            lua_side["payload"] = drop_empty_names(v["payload"])
        py_side["problems"] = sorted(p["code"] for p in m["problems"])
        lua_side["problems"] = sorted(v["problems"])
        py_side["problem_fields"] = py_side["problems"]
        lua_side["problem_fields"] = sorted(v["problem_fields"])
        py_side["severity"] = m.get("severity")
        lua_side["severity"] = v.get("severity")
        if m["kind"] != "raw":
            # vhost_user.need_reply is there only when true, like the bare filter name
            py_side["need_reply"] = bool(m["need_reply"])
            lua_side["need_reply"] = v.get("need_reply", False)
            # the old names are aliases carrying the same values
            py_side["old"] = (m["reply"], m["reply_to"], m["reply_in"])
            lua_side["old"] = (v.get("old_reply"), v.get("old_reply_to"), v.get("old_reply_in"))
            py_side["old_request"] = m["request"] if m["channel"] == "backend" else None
            lua_side["old_request"] = v.get("old_request")
        for k in py_side:
            if py_side[k] != lua_side[k]:
                errors.append(f"{where}: {k}: python {py_side[k]!r} != lua {lua_side[k]!r}")
        for key in ("latency_us", "old_latency_us"):
            if m["latency_us"] is not None and abs(v.get(key, -1e9) - m["latency_us"]) > 1.0:
                errors.append(f"{where}: {key} {v.get(key)} != {m['latency_us']}")
    for key in lua.views:
        if key not in matched:
            errors.append(
                f"frame {key[0]}#{key[1]}: only in tshark output ({lua.views[key].get('name')})"
            )
    return errors


def agreeing_views(path: Path) -> tuple[list[dict[str, Any]], Dissection]:
    """The Python views of a capture and tshark's with the Lua dissector, checked to be
    the same (no Lua error, no difference): the start of every agreement test."""
    py = python_views(path)
    lua = dissect(path)
    assert not lua.lua_errors, lua.lua_errors[:5]
    errors = compare(py, lua)
    assert not errors, "\n".join(errors[:30])
    return py, lua
