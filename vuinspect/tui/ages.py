"""How long something took or has waited, as the TUI's views show it (``12.5 ms``,
``3.0 s``, ``2 min 5 s``)."""

from __future__ import annotations


def format_age(ns: int) -> str:
    s = ns / 1e9
    if s < 1:
        return f"{ns / 1e6:.1f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"
