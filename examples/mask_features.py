"""Feature masker: clear feature bits in what the back-end offers and the front-end acks.

    VUINSPECT_MASK=VIRTIO_RING_F_EVENT_IDX vuinspect proxy --listen /tmp/vu.sock \
        --connect /tmp/qsd.sock --script examples/mask_features.py

Settings (environment, read when the proxy starts):
  VUINSPECT_MASK  feature names, comma-separated (default VIRTIO_RING_F_EVENT_IDX);
                  spelled as for the mask-features rule (docs/rules.md): VIRTIO_F_*,
                  VIRTIO_RING_F_*, VIRTIO_BLK_F_*, VHOST_USER_PROTOCOL_F_*, BIT_n

The bits are cleared in GET_FEATURES / GET_PROTOCOL_FEATURES replies and in
SET_FEATURES / SET_PROTOCOL_FEATURES, so both peers agree the feature is off.
The payload is changed as decoded fields (msg.payload["features"]); the proxy
re-encodes it with the protocol tables.
"""

import os

from vuinspect.rules import feature_bit

MASKS = {"virtio": 0, "protocol": 0}
for _name in os.environ.get("VUINSPECT_MASK", "VIRTIO_RING_F_EVENT_IDX").split(","):
    if _name.strip():
        _kind, _bit = feature_bit(_name.strip())
        MASKS[_kind] |= 1 << _bit

FEATURE_MESSAGES = {
    ("GET_FEATURES", True): "virtio", ("SET_FEATURES", False): "virtio",
    ("GET_PROTOCOL_FEATURES", True): "protocol", ("SET_PROTOCOL_FEATURES", False): "protocol",
}


def message(flow, msg):
    kind = FEATURE_MESSAGES.get((msg.name, msg.reply)) if msg.channel == "main" else None
    if kind is None or not MASKS[kind]:
        return
    features = msg.payload.get("features")
    if isinstance(features, int) and features & MASKS[kind]:
        msg.payload["features"] = features & ~MASKS[kind]

