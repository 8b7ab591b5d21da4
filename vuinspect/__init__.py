"""vuinspect: a transparent proxy, decoder, TUI and Wireshark dissector for vhost-user.

Scripting: ``vuinspect.open(path, filter=None)`` yields the decoded messages of a
capture; ``msg.to_dict()`` is the NDJSON object of ``vuinspect read --json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message

__version__ = "0.1.0"
__all__ = ["__version__", "open"]


def open(
    source: Any,
    filter: str | None = None,
    *,  # the API's names
    device: str | None = None,
) -> Iterator[Message]:
    """Yield the messages of a capture (see :func:`vuinspect.api.open`).

    Imported lazily so that ``import vuinspect`` (every command) stays light.
    """
    from .api import open as _open

    return _open(source, filter, device=device)
