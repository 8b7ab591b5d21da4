"""Latency injector: hold chosen vhost-user messages back N ms.

    VUINSPECT_LATENCY_MS=3000 vuinspect proxy --listen /tmp/vu.sock \
        --connect /tmp/qsd.sock --script examples/latency.py

Settings (environment, read when the proxy starts):
  VUINSPECT_LATENCY_REQUEST  request names, comma-separated (default GET_VRING_BASE)
  VUINSPECT_LATENCY_MS       how long each is held (default 500)
  VUINSPECT_LATENCY_COUNT    at most this many per connection (default: no limit)

Only requests are held (the front-end's message, or the back-end's on its
channel), never replies; everything behind a held message in its direction
waits with it, as behind a slow peer.  The proxy holds it (msg.delay), the hook
returns at once: other messages and connections go on.
"""

import os

REQUESTS = {n.strip().upper() for n in
            os.environ.get("VUINSPECT_LATENCY_REQUEST", "GET_VRING_BASE").split(",") if n.strip()}
DELAY_S = float(os.environ.get("VUINSPECT_LATENCY_MS", "500")) / 1000
COUNT = int(os.environ.get("VUINSPECT_LATENCY_COUNT", "0")) or None


def connection_open(flow):
    flow.metadata["delayed"] = 0


def message(flow, msg):
    if msg.reply or msg.name not in REQUESTS:
        return
    if COUNT is not None and flow.metadata["delayed"] >= COUNT:
        return
    flow.metadata["delayed"] += 1
    msg.delay(DELAY_S)
