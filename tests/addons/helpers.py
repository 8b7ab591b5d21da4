"""An in-process proxy whose rule set carries addons loaded from files or source text."""

from __future__ import annotations

import os

from vuinspect.addons import load_scripts
from vuinspect.proxy.server import Route
from vuinspect.rules import RuleSet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")


def write_script(dirpath: str, source: str, name: str = "addon.py") -> str:
    path = os.path.join(dirpath, name)
    with open(path, "w") as f:
        f.write(source)
    return path


def addon_proxy(
    proxy,
    sockdir: str,
    scripts: list[str],
    lines: list[str] | None = None,
    be_name: str = "be.sock",
):
    """(server, recorder, proxy path) with the scripts loaded; report lines go to ``lines``."""
    px = os.path.join(sockdir, "px.sock")
    srv, rec = proxy([Route(px, os.path.join(sockdir, be_name), frontend="listen")])
    report = lines.append if lines is not None else None
    srv.rules = RuleSet([], addons=load_scripts(scripts), report=report)
    return srv, rec, px


def addon_notes(rec, n: int = 1) -> list[dict]:
    """Addon notes in the capture (waits for ``n``)."""
    return rec.notes("addon", n)
