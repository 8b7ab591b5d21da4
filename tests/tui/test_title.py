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


def test_title_of_a_proxy_says_where_it_listens_escaped():
    source = LiveSource("/b.sock", listening=[("/a\x1b]0;x\x07.sock", "/b.sock")])
    try:
        text = title_text(Model(source), "messages", follow=True, marks=0).plain
        assert text.startswith("vuinspect listening on /a\\x1b]0;x\\x07.sock -> /b.sock  0 frames")
        for width in range(20, 120):
            assert (
                "\x1b"
                not in title_text(
                    Model(source), "messages", follow=True, marks=0, width=width
                ).plain
            )
    finally:
        source.close()


def test_a_title_given_a_width_fits_it_and_keeps_the_state():
    """Parts go in order: other view tabs, the why of a filter, the directory, the tab, ..."""
    frames = demo_frames()
    source = LiveSource(
        "/var/tmp/some/long/directory/name/proxy.sock",
        listening=[("/run/user/1000/vuinspect/vu.sock", "/run/qsd/blk0.sock")],
    )
    try:
        for f in frames:
            source.push(f)
        model = Model(source)
        model.run_to_end()
        model.set_filter("name == GET_VRING_BASE")
        model.run_to_end()
        full = title_text(model, "state", follow=False, marks=2).plain
        assert title_text(model, "state", follow=False, marks=2, width=len(full)).plain == full
        seen = set()
        for width in range(60, len(full)):
            text = title_text(model, "state", follow=False, marks=2, width=width).plain
            assert len(text) <= width, (width, text)
            assert f"{len(frames):,} frames" in text and "LIVE  paused" in text, (width, text)
            assert f"{len(model):,} shown" in text and "2 marked" in text, (width, text)
            seen.add(text)
        assert len(seen) > 5  # it degrades in steps, not all at once
        at_80 = title_text(model, "state", follow=False, marks=2, width=78).plain
        assert "vu.sock" in at_80 and "Connections" not in at_80
        at_120 = title_text(model, "state", follow=False, marks=2, width=118).plain
        assert at_120.startswith("vuinspect listening on /run/user/1000/vuinspect/vu.sock  ")
    finally:
        source.close()


def test_a_cut_name_fits_in_screen_cells_with_wide_characters() -> None:
    from rich.cells import cell_len

    from vuinspect.tui.title import _cut

    cut = _cut("/tmp/漢字漢字漢字abc.pcapng", 14)  # (len() counted a wide character as one)
    assert cell_len(cut) <= 14 and cut.endswith("abc.pcapng") and cut.startswith("…")
