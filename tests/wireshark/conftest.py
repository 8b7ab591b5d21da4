"""Fixtures for the Wireshark tests: skip only when tshark is absent; captures built once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import ws_pdml
import ws_samples

HAVE_TSHARK = shutil.which("tshark") is not None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="tshark is not installed")
    for item in items:
        if "tshark" in item.keywords and not HAVE_TSHARK:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def capdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wscap")


@pytest.fixture(scope="session")
def sample_captures(capdir) -> dict[str, Path]:
    """The generated captures every agreement test runs on."""
    return {
        "every_le": ws_pdml.write_capture(
            capdir / "every_le.pcapng", ws_samples.every_message_frames()
        ),
        "every_be": ws_pdml.write_capture(
            capdir / "every_be.pcapng",
            ws_samples.every_message_frames(conn=2, order=">"),
            big_endian=True,
        ),
        "framing": ws_pdml.write_capture(capdir / "framing.pcapng", ws_samples.framing_frames()),
    }
