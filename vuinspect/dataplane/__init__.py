"""The data plane: virtqueues seen through the shared guest memory (issue 13).

A library with no I/O of its own besides mapping the fds it is given; the
proxy, the capture and the TUI plug it in.  Modules:

* ``memory``    — ``GuestMemory``: own dup of each region fd, mapped
  ``PROT_READ``/``MAP_SHARED``; translation of ring addresses (UVA by default,
  GPA with ``GPA_ADDRESSES``, IOVA through the IOTLB with ``ACCESS_PLATFORM``)
  and of buffer addresses (GPA or IOVA); bounds-checked reads that raise only
  ``GuestMemoryError`` (a data-plane problem code + text).
* ``rings``     — ``RingConfig``, ``sample_split``/``sample_packed`` (with a
  ``PackedTracker`` per packed vring) -> ``RingSample``; ``diff`` -> ``SampleDiff``;
  ``vring_need_event``.
* ``inflight``  — ``in_flight_chains``/``walk_split``/``walk_packed`` -> ``Chain``
  (descriptors, per-device request header, problems); ``SplitTracker`` for
  used ids that were never made available.
* ``headers``   — virtio-blk / virtio-net / FUSE request headers as layouts.
* ``diagnose``  — ``diagnose(samples, notifies, ...)`` -> ``Finding`` list
  (backend_stalled, lost_kick, lost_call, ring_reset_in_flight).
* ``problems``  — ``DATAPLANE_CODES`` (``protocol.problems.ProblemCode``
  records) and ``DataProblem``.
* ``sampler``   — ``Sampler``, the proxy's ring-sampler thread (queue, ticks,
  samples -> ``ring`` frames); ``sampler_messages``: what each vring, feature,
  reset and memory message does to its view of a connection (tables);
  ``sampler_state``: what it keeps per connection and vring; ``sampler_fds``:
  ``FdBudget``, the bound on the fds it holds.

How it plugs in (the integration step):

1. One ``GuestMemory`` per proxied connection, owned by the proxy's sampler
   thread, never by the forwarding threads (it is not thread-safe: calls from
   two threads need one lock, as tests/dataplane/ringbackend.py does).  The
   relay passes each front-end message that carries memory, with a ``dup`` of
   its fds made before the relay closes its own copies, to that thread (a
   queue: the forwarding path never waits on it).  There: SET_MEM_TABLE ->
   ``set_table(regions_from(payload["regions"]), fds)``; ADD_MEM_REG -> ``add_region(RegionSpec.from_payload(p), fd)``;
   REM_MEM_REG -> ``remove_region(...)``; IOTLB_MSG -> ``iotlb_message(p)``;
   SET_FEATURES / SET_PROTOCOL_FEATURES -> ``set_features(...)``;
   RESET_OWNER / RESET_DEVICE -> ``reset()``; connection end -> ``close()``.
   GuestMemory keeps its own dup of each fd (the one its mmap makes), so the
   caller closes whatever it passed once the call returns.
   ``set_table``/``add_region`` return problems (``region_map_failed``) to
   attach to that message.
2. The sampler keeps, per started vring, ``RingConfig.from_vring(session.vring(i),
   session.virtio_acked)`` (rebuilt on SET_VRING_NUM/ADDR/SET_FEATURES), a
   ``PackedTracker.from_base(num, base)`` for packed rings (base from
   SET_VRING_BASE) and a ``SplitTracker`` for split rings.  Every interval and
   at each vring control message: ``s = sample(mem, cfg, now, tracker)``;
   ``d = diff(last, s, rate_hint=hint)``, ``hint = rate_hint(hint, d)`` (``last`` only from the same
   ring start: after SET_VRING_BASE or a reset the indices restart);
   ``tracker.update(mem, cfg, s)`` (split); emit a
   ``ring`` frame from ``s.to_json()`` only when ``d`` is truthy (plus start
   and stop), with ``s.problems + d.problems + update problems``.
   Offline (``read``, the TUI on a file): ``RingSample.from_json`` and
   ``Notify.from_json`` rebuild the records from the frames (ValueError on a
   damaged one), then the same ``diff``/``diagnose`` run: one path.
3. Detail on demand (TUI Enter, ``read --rings --detail``):
   ``in_flight_chains(mem, cfg, s, session.device, tracker=split_tracker)``
   -> ``[c.to_json()]`` (the tracker knows the heads really outstanding when
   the device completes out of order).
4. Diagnosis: the session keeps each vring's recent samples (bounded, e.g. the
   last 60 s) and notify aggregates, and calls ``diagnose(samples, notifies,
   now_ns=..., resets=[GET_VRING_BASE / RESET_* / reconnect times],
   trace_kicks=..., trace_calls=..., receive=is_receive_queue(session.device,
   index))`` on each ring frame and on a timer (a net receive queue full of
   posted buffers is normal, not a stall); an
   active ``Finding`` is a wait in the TUI "Waiting" panel, a resolved one
   carries ``duration_ns``.  ``Finding.problem`` gives the problem to attach.
5. Problem codes: merge ``problems.DATAPLANE_CODES`` into
   ``vuinspect/protocol/problems.CODES`` (same record type) so the filter,
   NDJSON and the Lua generator know them.
"""

from __future__ import annotations

from .diagnose import Finding, Notify, diagnose, is_receive_queue
from .inflight import Chain, Desc, SplitTracker, in_flight_chains
from .memory import GuestMemory, GuestMemoryError, RegionSpec, regions_from
from .problems import DATAPLANE_CODES, DataProblem
from .rings import (
    PackedTracker,
    RingConfig,
    RingSample,
    SampleDiff,
    diff,
    in_flight,
    sample,
    vring_need_event,
)

__all__ = [
    "DATAPLANE_CODES",
    "Chain",
    "DataProblem",
    "Desc",
    "Finding",
    "GuestMemory",
    "GuestMemoryError",
    "Notify",
    "PackedTracker",
    "RegionSpec",
    "RingConfig",
    "RingSample",
    "SampleDiff",
    "SplitTracker",
    "diagnose",
    "diff",
    "in_flight",
    "in_flight_chains",
    "is_receive_queue",
    "regions_from",
    "sample",
    "vring_need_event",
]
