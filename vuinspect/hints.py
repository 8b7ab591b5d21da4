"""Sentences that explain an empty result, said the same way by the CLI and the TUI."""

from __future__ import annotations

#: A capture (or live view) without ring/notify frames: how to get them.  ``read --rings``
#: and ``read --stats`` print it on stderr; the TUI's Queues tab ends it with where they show.
NO_RINGS = (
    "No ring samples: record with the proxy's --rings on (the default with a capture or the TUI)"
)
