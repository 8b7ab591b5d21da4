"""Shared fixtures: hand-made frame sequences and the captures written from them."""

from __future__ import annotations

import pytest

from vuinspect.capture import CaptureWriter
from vuinspect.samples import device_start, every_message


@pytest.fixture
def device_start_capture(tmp_path):
    path = tmp_path / "device-start.pcapng"
    with CaptureWriter(str(path)) as w:
        for frame in device_start():
            w.write(frame)
    return path


@pytest.fixture
def every_message_capture(tmp_path):
    path = tmp_path / "every-message.pcapng"
    with CaptureWriter(str(path)) as w:
        for frame in every_message():
            w.write(frame)
    return path
