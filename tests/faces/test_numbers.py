"""One number rule for every face: the summary line, the detail tree, the intercept form,
addon notes and the diff report show a field in hex or decimal the same way, by the
protocol tables (vuinspect/numtext.py): addresses, offsets, flag and feature words and
memory byte counts in hex; counts, queue sizes, indices and ids in decimal."""

from __future__ import annotations

import pytest

from vuinspect.addons import _changes
from vuinspect.encode import build
from vuinspect.frames import Frame
from vuinspect.message import Message
from vuinspect.pipeline import Pipeline
from vuinspect.protocol.requests import FrontendRequest
from vuinspect.render import payload_summary, tree
from vuinspect.reproduce.compare import compare
from vuinspect.testing import wire
from vuinspect.tui.intercept import _shown

ADDR = {"index": 0, "flags": 1, "desc": 0x1000, "used": 0x2000, "avail": 0x3000, "log": 0x4000}
REGION = {
    "guest_phys_addr": 0,
    "memory_size": 0x10000000,
    "userspace_addr": 0,
    "mmap_offset": 0x1000,
}


def decoded(request: int, values: dict, fds: tuple[str, ...] = ()) -> Message:
    (msg,) = Pipeline().feed(Frame(1, 1, "main", "f2b", build("main", request, values), fds))
    return msg


def cases() -> list[tuple[Message, str, int, str]]:
    """(message, field, value, how every face shows it)."""
    addr = decoded(wire.SET_VRING_ADDR, ADDR)
    num = decoded(wire.SET_VRING_NUM, {"index": 1, "num": 256})
    feats = decoded(wire.SET_PROTOCOL_FEATURES, {"features": 0x629})
    crypto = decoded(FrontendRequest.CLOSE_CRYPTO_SESSION, {"session_id": 12345})
    return [
        (addr, "desc", 0x1000, "0x1000"),  # an address below 64 KiB is still an address
        (addr, "avail", 0x3000, "0x3000"),
        (addr, "log", 0x4000, "0x4000"),  # the address, not the flags bit of the same name
        (num, "num", 256, "256"),  # a queue size
        (num, "index", 1, "1"),
        (feats, "features", 0x629, "0x629"),  # a feature word below 64 KiB
        (crypto, "session_id", 12345, "12345"),  # an id, not a word
    ]


@pytest.mark.parametrize("case", range(7))
def test_every_face_shows_a_field_the_same_way(case: int) -> None:
    msg, key, value, text = cases()[case]
    field = f"payload.{key}"
    # the detail tree
    rows = {k: t for _d, k, t in tree(msg)}
    assert rows[field] == f"{key}: {text}"
    # the intercept form (the text reads back as the value)
    shown = _shown(key, value, msg.layout)
    assert shown == text and int(shown, 0) == value
    # an addon's note
    new = dict(msg.payload, **{key: value + 1})
    assert _changes(msg.payload, new, msg.layout).startswith(f"{field} {text} -> ")
    # the diff report
    b = build("main", msg.request, {**_values(msg), key: value + 1})
    (changed,) = Pipeline().feed(Frame(1, 1, "main", "f2b", b, ()))
    report = compare([msg], [changed]).text()
    assert f"    {field}: {text} -> " in report, report


def _values(msg: Message) -> dict:
    return {k: v for k, v in msg.payload.items() if not k.endswith(("_name", "_names"))}


def test_summary_lines() -> None:
    addr, _, _, num, _, feats, crypto = (c[0] for c in cases())
    assert payload_summary(addr) == "vring 0 desc=0x1000 used=0x2000 avail=0x3000 log"
    assert payload_summary(num) == "vring 1 num=256"
    assert payload_summary(feats).startswith("0x629 [")
    assert payload_summary(crypto) == "session_id=12345"


def test_tree_memory_size_and_header() -> None:
    msg = decoded(wire.SET_MEM_TABLE, {"regions": [REGION]}, ("memfd:guest",))
    rows = {k: t for _d, k, t in tree(msg)}
    assert rows["payload.nregions"] == "nregions: 1"
    assert rows["payload.regions.0.memory_size"] == "memory_size: 0x10000000 (256MiB)"
    assert rows["payload.regions.0.mmap_offset"] == "mmap_offset: 0x1000"
    assert rows["payload.regions.0.guest_phys_addr"] == "guest_phys_addr: 0x0"
    assert rows["flags"].startswith("flags: 0x1 ")
    assert rows["size"] == f"size: {msg.size}"
