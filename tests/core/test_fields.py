"""fields.py, the field table: one name per concept with its old names as aliases, payload
paths derived from the layout tables, ``vuinspect fields`` (like ``tshark -G fields``)."""

from __future__ import annotations

import argparse

from vuinspect import fields as F
from vuinspect.pipeline import Pipeline
from vuinspect.samples import device_start


def test_one_name_per_concept_and_old_names_only_as_aliases():
    assert F.ALIASES == {
        "dir": "direction",
        "is_reply": "reply",
        "problem": "problems",
        "problem_codes": "problems",
    }
    for name in ("direction", "reply", "need_reply", "problems", "severity", "latency_us"):
        assert F.canonical(name) == name and name in F.BY_NAME
    assert F.canonical("dir") == "direction" and F.canonical("is_reply") == "reply"
    assert F.canonical("response_time") is None and F.canonical("nope") is None
    assert not set(F.ALIASES) & set(F.BY_NAME)  # an alias never shadows a name
    assert F.BY_NAME["direction"].values == ("f2b", "b2f")
    assert F.BY_NAME["severity"].values == ("error", "warning", "note")


def test_payload_paths_come_from_the_layouts_with_their_types():
    assert F.payload_types("num") == {"int"}
    assert F.payload_types("regions") == {"list"}
    assert F.payload_types("regions.memory_size") == {"int"}
    assert F.payload_types("regions.3.memory_size") == {"int"}  # one item of the array
    assert F.payload_types("features_names") == {"list"}  # a features word's bit names
    assert F.payload_types("nofd") == {"bool"}  # a one-bit bitfield
    assert F.payload_types("log") == {"bool", "int"}  # a bit in one layout, an address in another
    assert F.payload_types("data") == {"str"}
    assert F.payload_types("signal") == {"str"} and F.payload_types("in_flight") == {"int"}
    assert F.payload_types("label") == {"str"}  # an event's key
    assert F.payload_types("nope") is None and F.payload_types("regions.nope") is None
    assert "in mem_region" in F.PAYLOAD["regions.memory_size"]["int"]


def test_every_payload_field_the_decoder_emits_is_known():
    """The payload table is derived from the layouts: every key seen in the shipped captures
    and samples is accepted by the filter (no false 'unknown field')."""
    seen = set()
    for m in Pipeline().run(device_start()):
        for k, v in (m.info if m.is_event else m.payload).items():
            seen.add(k)
            if isinstance(v, list) and v and isinstance(v[0], dict):
                seen.update(f"{k}.{sub}" for item in v for sub in item)
    assert seen and not [k for k in seen if F.payload_types(k) is None]


def test_completions_rows_and_the_markdown_table():
    assert F.completions("dir") == ["direction", "dir"]
    assert F.completions("payload.regions.") == sorted(F.completions("payload.regions."))
    assert "payload.regions.memory_size" in F.completions("payload.regions.")
    rows = {r[0]: r for r in F.rows()}
    assert rows["direction"][3] == "dir"
    assert rows["payload.log"][1] == "bool|int"
    assert all(len(r[2]) <= 100 for name, r in rows.items() if name.startswith("payload."))
    assert len(rows) == len(F.FIELDS) + len(F.PAYLOAD)
    table = F.markdown_table().splitlines()
    assert table[0].startswith("| name | type |") and len(table) == len(F.FIELDS) + 3
    assert "| `direction` | str |" in F.markdown_table() and "`dir`" in F.markdown_table()


def test_the_fields_command_lists_by_prefix(capsys):
    p = argparse.ArgumentParser()
    F.configure(p)
    assert F.run(p.parse_args(["dire"])) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("\t") == [
        "direction",
        "str",
        F.BY_NAME["direction"].meaning,
        "aliases: dir",
    ]
    F.run(p.parse_args(["payload.regions."]))
    out = capsys.readouterr().out.splitlines()
    assert out and all(x.startswith("payload.regions.") for x in out)
    F.run(p.parse_args(["--markdown"]))
    assert capsys.readouterr().out == F.markdown_table() + "\n"


def test_a_rule_note_is_filtered_by_its_own_keys():
    """The keys of a rule's, an addon's or the intercept's note (verdict.firing_note) are
    payload fields a filter accepts, as they are NDJSON keys and Wireshark fields."""
    from vuinspect.filter import compile_filter
    from vuinspect.frames import event_frame
    from vuinspect.verdict import FIRING_NOTE_KEYS, firing_note

    assert all(F.payload_types(key) for key in FIRING_NOTE_KEYS)
    info = firing_note("drop", {"rule": "drop: SET_VRING_CALL"}, "drop", b"\x01", b"", "f2b")
    (note,) = Pipeline().feed(event_frame("note", 1, 1, info))
    assert compile_filter("payload.action == drop and payload.rule")(note)
    assert not compile_filter("payload.action == delay")(note)
