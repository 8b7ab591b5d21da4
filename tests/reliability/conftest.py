"""Shared fixtures: fuzz budgets, short socket dirs, started processes, /proc readings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def fuzz_count():
    """Scale a CI count by VUINSPECT_FUZZ_SCALE (the long runs set it; default 1)."""
    scale = float(os.environ.get("VUINSPECT_FUZZ_SCALE", "1"))

    def count(n: int) -> int:
        return max(1, int(n * scale))

    return count
