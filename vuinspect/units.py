"""The one duration syntax of the command line and the rule language (``500ms``, ``2s``).

Kept apart (no imports) so that the proxy's option parsing does not load the decoder
that :mod:`vuinspect.rules` brings in.
"""

from __future__ import annotations

import re

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|µs|ms|s|m)?$")


def parse_duration(text: str) -> float | None:
    """``2s``, ``500ms``, ``100us``, ``1m``, ``0.25`` (seconds): seconds, or None if not one."""
    m = _DURATION.match(text)
    return float(m.group(1)) * _UNITS[m.group(2) or "s"] if m else None
