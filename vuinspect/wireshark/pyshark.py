"""pyshark with our dissector loaded: ``vuinspect.wireshark.pyshark_capture(path)``.

pyshark drives tshark, which only knows vuinspect captures when the Lua dissector is
loaded.  The dissector is generated from this vuinspect's protocol tables (so an
installed wheel needs no checkout) into the user's cache folder, once per content, and
passed to tshark with ``-X lua_script:``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from . import luagen


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vuinspect"


def dissector_path() -> Path:
    """A file holding the generated dissector (written when missing or different)."""
    text = luagen.generate()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"vhost_user.{digest}.lua"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vhost_user.", suffix=".lua")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def pyshark_capture(path: str | os.PathLike[str], **kw: Any) -> Any:
    """A ``pyshark.FileCapture`` of ``path`` whose packets carry our ``vhost_user`` layer.

    Every keyword goes to ``FileCapture`` (``display_filter``, ``keep_packets``,
    ``eventloop``...); ``custom_parameters`` (list or dict) are kept, the ``-X
    lua_script:`` loading the dissector is added to them.  Field names are the
    ``vhost_user.*`` ones of ``vuinspect fields`` (e.g. ``pkt.vhost_user.name``).
    """
    import pyshark

    if kw.get("eventloop") is not None:
        _watch_children_by_pidfd(kw["eventloop"])
    lua = ["-X", f"lua_script:{dissector_path()}"]
    extra = kw.pop("custom_parameters", None) or []
    if isinstance(extra, dict):  # pyshark's other form: {"-o": "x:y"} -> ["-o", "x:y"]
        extra = [str(x) for kv in extra.items() for x in kv]
    return pyshark.FileCapture(os.fspath(path), custom_parameters=[*extra, *lua], **kw)


def _watch_children_by_pidfd(loop: asyncio.AbstractEventLoop) -> None:
    """Have ``loop`` learn of tshark's exit through a pidfd (Python 3.11 on Linux).

    With a caller's own loop pyshark keeps asyncio's default ThreadedChildWatcher, whose
    thread blocks in ``waitpid`` while the subprocess transport's ``close()`` polls the
    same pid: under load the poll reaps tshark first, the watcher reports exit status 255
    and pyshark raises TSharkCrashException on ``close()`` (4 of 12 parallel runs on two
    cores).  A pidfd watcher has no such thread; Python 3.12+ uses pidfds by itself.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
    watcher.attach_loop(loop)
