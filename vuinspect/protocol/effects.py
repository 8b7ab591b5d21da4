"""What each request does to a connection's state, and which stateful checks it gets, as data.

One table, two interpreters: ``vuinspect/session.py`` (Python) and the generated
Wireshark dissector (``wireshark/runtime_effects.lua``, fed by ``luagen``).  A
request's :class:`Rule` lists the :class:`Effect` s of the request and of its
reply, in order, and the :class:`Check` s its request gets on top of the checks
every request gets from its :class:`~.requests.RequestSpec` (fd counts,
``needs`` protocol features, NEED_REPLY without REPLY_ACK).  Rules: PROTOCOL.md
§2-§6 (summarised from QEMU ``docs/interop/vhost-user.rst``).

Effect ops (``field`` is a session attribute, or a vring attribute for ``vring_*``):

* ``set``           – field = payload[key] (None when absent);
* ``const``         – field = value;
* ``fd``            – field = the message's first fd description (None without one);
* ``with_fd``       – field = the payload plus ``fd`` (the log and inflight areas);
* ``guess_device``  – the device type from the offered features, if none is known yet;
* ``regions_set`` / ``region_add`` / ``region_remove`` – the memory table;
* ``rings_stopped`` – the data plane's rings stop (value ``all``, or ``index``: the payload's);
* ``ring_restart``  – the data plane's ring of the payload's index starts again;
* ``vring``         – the vring of the payload's index exists from now on;
* ``vring_set``     – vring.field = payload[key], as value says (None: as is, ``bool``, ``bit0``);
* ``vring_const``   – vring.field = value;
* ``vring_fd``      – vring.field = the fd description, or value when the payload says NOFD;
* ``vrings_all``    – field = value on every vring known.

``vring*`` effects of a request act on the vring of its payload's ``index`` (skipped
without one); on a reply, on the vring its paired request named.  ``when`` holds a
condition, as data: ``("has", key)`` the payload has key; ``("int", key)`` it is an
integer; ``("ok",)`` the reply's result is 0; ``("request",)`` the reply was paired;
``("lacks_virtio", bit)`` the acked virtio features are known and lack bit.

Check kinds: ``vring_started`` (vring_not_started), ``vring_range``
(vring_out_of_range), ``max_regions`` (too_many_regions over ``value`` regions),
``offered`` (features_not_offered: ``value`` = (word, verb)), ``slots``
(too_many_regions over the back-end's memory slots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import features as F
from .requests import MAX_FDS, BackendRequest, FrontendRequest

#: Effect ops and check kinds both interpreters know (a test keeps them in step).
OPS = (
    "set",
    "const",
    "fd",
    "with_fd",
    "guess_device",
    "regions_set",
    "region_add",
    "region_remove",
    "rings_stopped",
    "ring_restart",
    "vring",
    "vring_set",
    "vring_const",
    "vring_fd",
    "vrings_all",
)
CHECKS = ("vring_started", "vring_range", "max_regions", "offered", "slots")
#: Session fields the payload decode context depends on: setting one rebuilds it.
CONTEXT_FIELDS = frozenset({"virtio_acked", "protocol_acked", "device"})
#: The virtio bits a RequestSpec's ``needs_virtio`` can name.
VIRTIO_GATES: dict[str, int] = {
    "PROTOCOL_FEATURES": F.PROTOCOL_FEATURES_BIT,
    "ACCESS_PLATFORM": F.ACCESS_PLATFORM_BIT,
}
#: The virtio feature word a request's ``needs_virtio`` bits are checked against.
VIRTIO_WORDS = ("acked", "offered", "acked_or_offered")


@dataclass(frozen=True, slots=True)
class Effect:
    """One state change of a request or reply (see the module docstring for ``op``)."""

    op: str
    field: str = ""
    key: str = ""
    value: Any = None
    when: tuple = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown effect op {self.op!r}")


@dataclass(frozen=True, slots=True)
class Check:
    """A stateful check a request gets (see the module docstring for ``kind``)."""

    kind: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.kind not in CHECKS:
            raise ValueError(f"unknown check {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Rule:
    """A request's effects (on the request, on its reply) and its extra checks."""

    request: tuple[Effect, ...] = ()
    reply: tuple[Effect, ...] = ()
    checks: tuple[Check, ...] = ()
    #: which virtio word the spec's ``needs_virtio`` bits are read from, and the problem
    #: when one is missing ("": feature_not_negotiated naming the bit; else that code)
    virtio: str = "acked"
    virtio_problem: str = ""

    def __post_init__(self) -> None:
        if self.virtio not in VIRTIO_WORDS:
            raise ValueError(f"unknown virtio word {self.virtio!r}")


NO_RULE = Rule()

_IN_RANGE = Check("vring_range")
_STARTED = Check("vring_started")


def _vring_rule(*effects: Effect) -> Rule:
    """A request naming one vring: its index must be below the announced queue count."""
    return Rule(request=effects, checks=(_IN_RANGE,))


def _stop_rule(*request: Effect) -> Rule:
    """GET_VRING_BASE and its SKIP_DRAIN twin: the ring stops, the reply holds its base."""
    return Rule(
        request=request,
        reply=(
            Effect("vring_const", "started", value=False, when=("request",)),
            Effect("vring_set", "stopped_base", "num", when=("request",)),
        ),
        checks=(_STARTED, _IN_RANGE),
    )


FE = FrontendRequest
BE = BackendRequest

FRONTEND_RULES: dict[FrontendRequest, Rule] = {
    FE.GET_FEATURES: Rule(
        reply=(
            Effect("set", "virtio_offered", "features", when=("has", "features")),
            Effect("guess_device", key="features", when=("has", "features")),
        )
    ),
    FE.SET_FEATURES: Rule(
        request=(
            Effect("set", "virtio_acked", "features"),
            # without VHOST_USER_F_PROTOCOL_FEATURES, SET_FEATURES enables every ring
            Effect(
                "vrings_all",
                "enabled",
                value=True,
                when=("lacks_virtio", F.PROTOCOL_FEATURES_BIT),
            ),
        ),
        checks=(Check("offered", ("virtio", "acks")),),
    ),
    FE.SET_OWNER: Rule(request=(Effect("const", "owner", value=True),)),
    FE.RESET_OWNER: Rule(
        request=(Effect("const", "owner", value=False), Effect("rings_stopped", value="all"))
    ),
    FE.SET_MEM_TABLE: Rule(
        request=(Effect("regions_set", key="regions", when=("has", "regions")),),
        checks=(Check("max_regions", MAX_FDS),),
    ),
    FE.SET_LOG_BASE: Rule(request=(Effect("with_fd", "log"),)),
    FE.SET_VRING_NUM: _vring_rule(Effect("vring_set", "num", "num")),
    FE.SET_VRING_ADDR: _vring_rule(
        Effect("vring_set", "desc", "desc"),
        Effect("vring_set", "used", "used"),
        Effect("vring_set", "avail", "avail"),
        Effect("vring_set", "log", "log"),
        Effect("vring_set", "log_enabled", "flags", value="bit0"),
    ),
    FE.SET_VRING_BASE: _vring_rule(Effect("ring_restart"), Effect("vring_set", "base", "num")),
    FE.GET_VRING_BASE: _stop_rule(
        Effect("rings_stopped", value="index", when=("int", "index")),
    ),
    FE.SET_VRING_KICK: _vring_rule(
        Effect("vring_fd", "kick", value="none (polling)"),
        Effect("vring_const", "started", value=True),
    ),
    FE.SET_VRING_CALL: _vring_rule(Effect("vring_fd", "call", value="none (front-end polls)")),
    FE.SET_VRING_ERR: _vring_rule(Effect("vring_fd", "err", value="none")),
    FE.GET_PROTOCOL_FEATURES: Rule(
        reply=(Effect("set", "protocol_offered", "features"),), virtio="offered"
    ),
    FE.SET_PROTOCOL_FEATURES: Rule(
        request=(Effect("set", "protocol_acked", "features"),),
        checks=(Check("offered", ("protocol", "sets")),),
        virtio="offered",
    ),
    FE.GET_QUEUE_NUM: Rule(reply=(Effect("set", "queue_num", "num_queues"),)),
    FE.SET_VRING_ENABLE: Rule(
        request=(Effect("vring_set", "enabled", "num", value="bool"),),
        checks=(_IN_RANGE,),
        virtio="acked_or_offered",
        virtio_problem="enable_without_protocol_features",
    ),
    FE.NET_SET_MTU: Rule(request=(Effect("set", "mtu", "mtu"),)),
    FE.SET_BACKEND_REQ_FD: Rule(
        request=(
            Effect("const", "backend_channel", value="requested"),
            Effect("fd", "backend_fd"),
        ),
        reply=(Effect("const", "backend_channel", value="established", when=("ok",)),),
    ),
    FE.SET_VRING_ENDIAN: _vring_rule(Effect("vring")),
    FE.GET_CONFIG: Rule(reply=(Effect("set", "config", "data"),)),
    FE.GET_INFLIGHT_FD: Rule(reply=(Effect("with_fd", "inflight"),)),
    FE.SET_INFLIGHT_FD: Rule(request=(Effect("with_fd", "inflight"),)),
    FE.RESET_DEVICE: Rule(
        request=(
            Effect("rings_stopped", value="all"),
            Effect("vrings_all", "started", value=False),
            Effect("vrings_all", "enabled", value=False),
        )
    ),
    FE.VRING_KICK: _vring_rule(Effect("vring_const", "started", value=True)),
    FE.GET_MAX_MEM_SLOTS: Rule(reply=(Effect("set", "max_mem_slots", "slots"),)),
    # a payload cut short lacks the later fields: only a whole region counts
    FE.ADD_MEM_REG: Rule(
        request=(Effect("region_add", when=("has", "mmap_offset")),),
        checks=(Check("slots"),),
    ),
    FE.REM_MEM_REG: Rule(request=(Effect("region_remove", when=("has", "userspace_addr")),)),
    FE.SET_STATUS: Rule(request=(Effect("set", "status", "status"),)),
    FE.GET_STATUS: Rule(reply=(Effect("set", "status", "status"),)),
    FE.GET_VRING_BASE_SKIP_DRAIN: _stop_rule(),
}

#: Any request on the back-end channel shows the channel works.
_ESTABLISHED = Rule(request=(Effect("const", "backend_channel", value="established"),))
BACKEND_RULES: dict[BackendRequest, Rule] = {r: _ESTABLISHED for r in BackendRequest}

RULES: dict[str, dict[int, Rule]] = {
    "main": {int(k): v for k, v in FRONTEND_RULES.items()},
    "backend": {int(k): v for k, v in BACKEND_RULES.items()},
}


def rule(channel: str, request: int) -> Rule:
    """The rule of ``request`` on ``channel`` (an empty one when it changes nothing)."""
    return RULES.get(channel, RULES["main"]).get(request, NO_RULE)


def session_fields() -> tuple[str, ...]:
    """The session attributes the table's effects write (its field ops, and ``device``
    for ``guess_device``), in table order: what a session's state is, as the faces show it
    (tests compare it across decoding paths; a new effect's field joins by itself)."""
    names = dict.fromkeys(
        "device" if e.op == "guess_device" else e.field
        for rules in RULES.values()
        for r in rules.values()
        for e in r.request + r.reply
        if e.op in ("set", "const", "fd", "with_fd", "guess_device")
    )
    return tuple(names)
