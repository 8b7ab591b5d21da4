"""tui/title.py and tui/ages.py without Textual: the title line says what is open, how far
decoding and filtering got, live or not, the view; a file's texts escaped. Ages as shown."""

from __future__ import annotations

from vuinspect.tui.ages import format_age
from vuinspect.tui.model import Model
from vuinspect.tui.samples import demo_frames
from vuinspect.tui.sources import FrameListSource, LiveSource
from vuinspect.tui.title import title_text


def test_ages():
    assert format_age(12_500_000) == "12.5 ms"
    assert format_age(3_000_000_000) == "3.0 s"
    assert format_age(90_000_000_000) == "90.0 s"  # seconds up to two minutes
    assert format_age(125_000_000_000) == "2 min 5 s"


def test_title_of_a_decoded_and_a_filtered_capture():
    frames = demo_frames()
    model = Model(FrameListSource(frames, name="/tmp/x/demo\x1b[31m.pcapng"))
    text = title_text(model, "messages", follow=False, marks=0).plain
    assert f"{len(frames):,} frames" in text and "decoding 0%" in text
    assert "\x1b" not in text and "demo\\x1b[31m.pcapng" in text and "/tmp/x" not in text
    model.run_to_end()
    model.set_filter("name == GET_VRING_BASE")
    model.run_to_end()
    text = title_text(model, "state", follow=False, marks=2).plain
    assert "decoding" not in text and "LIVE" not in text
    assert f"filter: name == GET_VRING_BASE  {len(model):,} shown" in text
    assert "2 marked" in text and text.endswith(
        "1 Messages  [2 State]  3 Connections  4 Statistics  5 Queues"
    )


def test_title_of_a_live_source():
    source = LiveSource("proxy /run/vhost.sock")
    try:
        model = Model(source)
        text = title_text(model, "queues", follow=True, marks=0).plain
        assert text.startswith("vuinspect proxy /run/vhost.sock  0 frames")
        assert "LIVE  follow" in text and "[5 Queues]" in text
        assert "paused (End follows)" in title_text(model, "queues", follow=False, marks=0).plain
    finally:
        source.close()
