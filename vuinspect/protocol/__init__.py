"""The vhost-user protocol as data: requests, payload layouts, feature bits, problem codes,
and what each request does to a connection's state (effects.py).

This package is the single source of truth: the decoder, the renderer, the
filter language, the TUI and the generated Lua dissector all read it.  It holds
no I/O and no state.
"""

from .features import (
    DEVICE_FEATURES,
    DEVICE_STATUS,
    PROTOCOL_FEATURES,
    TRANSPORT_FEATURES,
    Bit,
    bit_names,
    virtio_table,
)
from .problems import CODES, Problem, ProblemCode, problem
from .requests import (
    BACKEND,
    BACKEND_REQUESTS,
    FRONTEND,
    FRONTEND_REQUESTS,
    HEADER_SIZE,
    RequestSpec,
    by_name,
    lookup,
    request_name,
)

__all__ = [
    "BACKEND",
    "BACKEND_REQUESTS",
    "CODES",
    "DEVICE_FEATURES",
    "DEVICE_STATUS",
    "FRONTEND",
    "FRONTEND_REQUESTS",
    "HEADER_SIZE",
    "PROTOCOL_FEATURES",
    "TRANSPORT_FEATURES",
    "Bit",
    "Problem",
    "ProblemCode",
    "RequestSpec",
    "bit_names",
    "by_name",
    "lookup",
    "problem",
    "request_name",
    "virtio_table",
]
