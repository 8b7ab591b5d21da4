"""Fuzzing vuinspect's input side: mutators, invariant checks and a long-run command.

The decoder and the capture reader are the parts that take bytes from the
outside (a misbehaving back-end, a damaged or foreign file), so they are the
parts fuzzed here, in the way Wireshark's fuzzshark and randpkt do it:
mutate real-looking input, feed it through, and check invariants rather than
expected values.  ``mutate`` holds the generators, ``check`` the invariants,
``__main__`` the long run (``python -m vuinspect.fuzz --inputs 1000000``).
The short runs live in ``tests/reliability/``.
"""

from __future__ import annotations

from vuinspect.fuzz.check import InvariantError, check_capture_bytes, check_frames

__all__ = ["InvariantError", "check_capture_bytes", "check_frames"]
