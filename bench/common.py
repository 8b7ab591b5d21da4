"""Shared helpers for the benchmarks: processes, temp dirs, medians, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

PY = sys.executable


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def tempdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vubench.", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def process(
    args: list[str],
    *,
    ready: str | None = None,
    stream: str = "stdout",
    timeout: float = 30.0,
    **kw,
) -> Iterator[subprocess.Popen]:
    """Start a process, optionally wait for a line containing ``ready``, always kill it."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )
    try:
        if ready is not None:
            pipe = proc.stdout if stream == "stdout" else proc.stderr
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = pipe.readline()
                if ready in line:
                    break
                if not line and proc.poll() is not None:
                    err = proc.stderr.read() if stream == "stdout" else ""
                    raise RuntimeError(f"{args[:4]} exited early: {err.strip()[:300]}")
            else:
                raise RuntimeError(f"{args[:4]} not ready after {timeout}s")
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants alive now (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(x) for x in f.read().split()]
    return found


def wait_for_socket(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.01)


def run_json(args: list[str], timeout: float = 600) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    facts = {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        facts["load_before"] = f.read().split()[0]
    for tool in ("tshark", "socat", "qemu-system-x86_64"):
        path = shutil.which(tool)
        if path:
            with contextlib.suppress(Exception):
                first = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=10
                ).stdout.splitlines()[0]
                facts[tool] = first.strip()
    return facts
