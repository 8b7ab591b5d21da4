"""Wireshark side of vuinspect: the generated Lua dissector, its installer, the extcap entry.

``fields`` turns the protocol tables into Wireshark field definitions, ``luagen``
writes ``dissectors/vhost_user.lua`` from them (the runtime Lua it appends
lives in the ``runtime_*.lua`` files here), ``install`` copies the dissector
and the extcap launcher into the user's Wireshark folders, ``extcap``
speaks Wireshark's extcap protocol around the proxy, and ``pyshark_capture``
opens a capture through pyshark with the dissector loaded.
"""

from __future__ import annotations

from typing import Any


def pyshark_capture(path: Any, **kw: Any) -> Any:
    """A ``pyshark.FileCapture`` of ``path`` with our dissector loaded (see ``.pyshark``)."""
    from .pyshark import pyshark_capture as open_capture

    return open_capture(path, **kw)
