"""Shared helpers of the hostile-input audit: the CLI as a subprocess, texts no output may carry raw."""

from __future__ import annotations

import subprocess
import sys

#: What a terminal acts on or a reader is fooled by: ESC/CSI/OSC, BEL, NUL, C1 CSI,
#: a bidi override and isolate, a line separator.
EVIL = "\x1b]0;PWN\x07\x1b[2J\x00\x9b31m\u202e\u2066\u2028"
RAW = ("\x1b", "\x07", "\x00", "\x9b", "\u202e", "\u2066", "\u2028")


def cli(*argv: str, timeout: float = 60, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vuinspect", *argv],
        capture_output=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def raw_in(text: str) -> list[str]:
    """The raw control characters of RAW that ``text`` holds."""
    return [c for c in RAW if c in text]
