"""The ring timeline as text (``vuinspect read --rings``): one line per ring/notify message.

The payload is what the capture said (a ring sample or a notify window), so
every value is checked for type before it is shown and every text passes
``safe_text``: a crafted file cannot forge lines or drive the terminal.
"""

from __future__ import annotations

from typing import Any

from ..render import safe_text

#: Chains and descriptors shown per ring line with --detail (the sampler writes at most 16).
MAX_CHAINS_SHOWN = 16
MAX_DESCS_SHOWN = 8


def _int(v: Any) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else "?"


def in_message_list(msg: Any) -> bool:
    """Does a message list show ``msg`` by default?  Not the routine ring/notify messages:
    only those that raise or resolve a problem (``read`` without ``--rings``; the TUI
    list and the proxy's summary lines should follow the same rule)."""
    if msg.kind not in ("ring", "notify"):
        return True
    return bool(msg.problems) or "resolved" in msg.payload


def ring_summary(p: dict[str, Any]) -> str:
    """``vring 0 split num=256 avail=14 used=10 in_flight=4`` (plus packed positions, flags)."""
    parts = [
        f"vring {_int(p.get('vring'))}",
        safe_text(str(p.get("layout", "?"))[:8]),
        f"num={_int(p.get('num'))}",
    ]
    if p.get("ok") is False:
        parts.append("unreadable")
    else:
        parts += [
            f"avail={_int(p.get('avail_idx'))}",
            f"used={_int(p.get('used_idx'))}",
            f"in_flight={_int(p.get('in_flight'))}",
        ]
        if p.get("layout") == "packed":
            parts.append(f"wrap={_int(p.get('avail_wrap'))}/{_int(p.get('used_wrap'))}")
        for key in ("used_event", "avail_event"):
            if key in p:
                parts.append(f"{key}={_int(p[key])}")
    if p.get("call_fd") in ("none", "nofd"):  # the back-end cannot (none) or need not call
        parts.append(f"call_fd={p['call_fd']}")
    inflight = p.get("inflight")
    if isinstance(inflight, dict):  # what the back-end marked in its INFLIGHT_SHMFD buffer
        parts.append(f"inflight_fd={_int(inflight.get('count'))}")
    event = p.get("event")
    if isinstance(event, str):
        parts.append(f"[{safe_text(event[:16])}]")
    return " ".join(parts) + _invalid(p)


def _invalid(p: dict[str, Any]) -> str:
    """`` invalid=last_ns,resolved``: what the capture said of a wrong type or range
    (dropped when read: ``dataplane.records``)."""
    got = p.get("invalid")
    if not isinstance(got, list) or not got:
        return ""
    return (
        " invalid="
        + safe_text(",".join(str(k)[:40] for k in got[:4]))
        + (",..." if len(got) > 4 else "")
    )


def notify_summary(p: dict[str, Any]) -> str:
    """``vring 0 kick x7 over 9.0 ms``."""
    first, last = p.get("first_ns"), p.get("last_ns")
    span = ""
    if isinstance(first, int) and isinstance(last, int) and last > first:
        span = f" over {(last - first) / 1e6:.1f} ms"
    return (
        f"vring {_int(p.get('vring'))} {safe_text(str(p.get('signal', '?'))[:8])} "
        f"x{_int(p.get('count'))}{span}" + _invalid(p)
    )


def resolved_text(p: dict[str, Any]) -> list[str]:
    """``resolved lost_call after 2.1 s (call)`` per diagnosis the sample ends (a list of
    objects with a u64 ``duration_ns``: checked when read, ``dataplane.records``)."""
    out = []
    for r in p.get("resolved") or ():
        if isinstance(r, dict):
            d = r.get("duration_ns")
            took = f" after {d / 1e9:.1f} s" if isinstance(d, int) else ""
            out.append(
                f"resolved {safe_text(str(r.get('code')))}{took} "
                f"({safe_text(str(r.get('resolution', '')))})"
            )
    return out


def inflight_lines(p: dict[str, Any]) -> list[str]:
    """The INFLIGHT_SHMFD region's queue, when the sample holds it (indented)."""
    q = p.get("inflight")
    if not isinstance(q, dict):
        return []
    got = q.get("descs")
    descs: list[Any] = got if isinstance(got, list) else []
    heads = " ".join(
        f"{_int(d.get('index'))}#{_int(d.get('counter'))}"
        for d in descs[:MAX_CHAINS_SHOWN]
        if isinstance(d, dict)
    )
    out = [
        f"        inflight region: v{_int(q.get('version'))} desc_num={_int(q.get('desc_num'))} "
        f"used_idx={_int(q.get('used_idx'))} marked {_int(q.get('count'))}"
        + (f": desc#counter {heads}" if heads else "")
    ]
    return out + _problem_lines(q.get("problems"))


def _problem_lines(problems: Any) -> list[str]:
    """``!! code: text`` for (at most 4 of) the problems a record lists."""
    return [
        f"          !! {safe_text(str(prob.get('code')))}: {safe_text(str(prob.get('text'))[:200])}"
        for prob in (problems if isinstance(problems, list) else [])[:4]
        if isinstance(prob, dict)
    ]


def detail_lines(p: dict[str, Any]) -> list[str]:
    """In-flight chains and request headers, when the sample holds them (indented)."""
    out = inflight_lines(p)
    chains = p.get("chains")
    if not isinstance(chains, list):
        return out
    for c in chains[:MAX_CHAINS_SHOWN]:
        if not isinstance(c, dict):
            continue
        got = c.get("descs")
        descs: list[Any] = got if isinstance(got, list) else []
        line = (
            f"        head {_int(c.get('head'))}: {len(descs)} desc, "
            f"{_int(c.get('readable'))} B out, {_int(c.get('writable'))} B in"
        )
        header = c.get("header")
        if isinstance(header, dict):
            fields = [  # (keys come from the frame's JSON: a capture's words)
                f"{safe_text(str(k)[:24])}={v}"
                for k, v in header.items()
                if k != "layout"
                and not k.endswith("_name")
                and isinstance(v, int)
                and not isinstance(v, bool)
            ][:6]
            name = next((v for k, v in header.items() if k.endswith("_name")), None)
            line += f"  {safe_text(str(header.get('layout', '')))}"
            if name is not None:
                line += f" {safe_text(str(name)[:24])}"
            line += " " + " ".join(fields)
        out.append(line)
        for d in descs[:MAX_DESCS_SHOWN]:
            if isinstance(d, dict):
                flags = d.get("flag_names")
                names: list[Any] = flags if isinstance(flags, list) else []
                out.append(
                    f"          desc {_int(d.get('index'))} addr={_hex(d.get('addr'))} "
                    f"len={_int(d.get('len'))} "
                    f"{safe_text('|'.join(str(n) for n in names[:4]))}"
                )
        out += _problem_lines(c.get("problems"))
    return out


def _hex(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else "?"
