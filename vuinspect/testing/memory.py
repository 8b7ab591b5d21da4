"""This process's peak resident memory, as the memory tests and benches measure it."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """Peak RSS of this process since its exec, in MiB (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries the exec'ing process's high-water mark
    over into it, so a fresh interpreter started by a 400 MiB pytest reports 400 MiB
    whatever it does itself.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
