"""Failure replies the spec allows, per request (PROTOCOL.md §1.5 and the request table).

Used by the proxy's ``reply-error`` rule, which answers a request itself with
a failure: the reply must be one the front-end (or, on the back-end channel,
the back-end) already handles, never a malformed message.  Requests with no
failure reply (``GET_FEATURES``, ``GET_VRING_BASE`` ...) are not answered.
"""

from __future__ import annotations

import struct

from .requests import FLAG_NEED_REPLY, RequestSpec

#: Requests that always have a reply, and how that reply says "failed".
#: ``u64:N`` a u64 result N; ``empty`` a reply with no payload (size 0);
#: ``crypto`` the request echoed with session_id -1; ``echo`` the request payload echoed
#: without the fd that success would carry.
FAILURE_REPLY: dict[str, str] = {
    "GET_CONFIG": "empty",  # "zero length of payload to indicate an error"
    "CREATE_CRYPTO_SESSION": "crypto",  # session_id < 0
    "SET_DEVICE_STATE_FD": "u64:257",  # error 1 in bits 0-7, bit 8: no fd returned
    "CHECK_DEVICE_STATE": "u64:1",
    "POSTCOPY_LISTEN": "u64:1",
    "POSTCOPY_END": "u64:1",
    "IOTLB_MSG": "u64:1",
    "GET_SHARED_OBJECT": "echo",  # no dmabuf fd: failure
    "BACKEND_SHARED_OBJECT_LOOKUP": "u64:1",
}
#: An acked request (REPLY_ACK with NEED_REPLY) fails with any non-zero u64; QEMU uses 1.
ACK_FAILURE = 1
CRYPTO_SESSION_ID_OFFSET = 1064


def failure_payload(spec: RequestSpec, flags: int, payload: bytes) -> bytes | None:
    """The payload of a failure reply to this request, or None if the spec has none."""
    how = FAILURE_REPLY.get(spec.name)
    if how is None:
        if spec.reply_mode in ("ack", "flag") and flags & FLAG_NEED_REPLY:
            return struct.pack("=Q", ACK_FAILURE)
        return None
    if how == "empty":
        return b""
    if how == "echo":
        return payload
    if how == "crypto":
        end = CRYPTO_SESSION_ID_OFFSET + 8
        if len(payload) < end:
            return None
        return payload[:CRYPTO_SESSION_ID_OFFSET] + struct.pack("=q", -1) + payload[end:]
    return struct.pack("=Q", int(how.partition(":")[2]))
