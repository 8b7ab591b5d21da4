"""Run a real QEMU and a real vhost-user back-end through the proxy, and watch.

`vuinspect demo` starts qemu-storage-daemon (vhost-user-blk) and QEMU with a
small guest that writes a pattern to the disk and reads it back, with the
proxy in the middle printing every message; it leaves a capture behind.
`--backend fs` uses virtiofsd (the guest writes a file in the share),
`--backend net` dpdk-testpmd with QEMU as the listening side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vuinspect.errors import CliError
from vuinspect.tui.launch import on_terminal

from . import runners, scenarios
from .guest import build_guest

BACKENDS = ("blk", "fs", "net")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="blk",
        help="which real back-end to run (default: blk)",
    )
    parser.add_argument(
        "-w",
        "--write",
        metavar="FILE",
        help="capture file (default: ./vuinspect-demo-BACKEND.pcapng)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for the guest (default: 120)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, sockets, disk image)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the verdict, not every message"
    )
    parser.add_argument(
        "--no-tui",
        action="store_true",
        help="print one line per message instead of opening the TUI (the default off a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    capture = Path(args.write or f"vuinspect-demo-{args.backend}.pcapng").resolve()
    if not capture.parent.is_dir():
        raise CliError(f"cannot write {capture}: no such directory")
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock, contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print(f"demo: {line}", file=sys.stderr, flush=True)

    def show(line: str) -> None:
        if not args.quiet and line.strip():
            with lock, contextlib.suppress(OSError):
                print(line, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="vuinspect-demo-", dir="/tmp"))  # short socket paths
    keep = args.keep
    start = time.monotonic()
    use_tui = not (args.quiet or args.no_tui) and on_terminal()

    def remove_workdir() -> None:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)

    stop = _SignalStop(remove_workdir)
    try:
        with stop:
            if use_tui:
                outcome = _run_with_tui(args, workdir, capture, stop)
            else:
                outcome = _run_backend(args, workdir, scenarios.ProxySpec(capture, show=show), say)
    except runners.MissingProgram as exc:
        raise CliError(str(exc)) from None
    except runners.RunError as exc:
        if stop.signum is None:
            keep = True
            first, *rest = str(exc).splitlines()
            if rest:
                say("\n".join(rest))
            raise CliError(f"{first} (logs in {workdir})") from None
    finally:
        remove_workdir()
    if stop.signum is not None:
        say(f"stopped by {signal.Signals(stop.signum).name}; capture so far: {capture}")
        return 128 + stop.signum
    say(f"{'OK' if outcome.ok else 'FAILED'}: {outcome.verdict}")
    say(
        f"capture: {capture} ({time.monotonic() - start:.1f}s); "
        f"read it with: {_self_command()} read {shlex.quote(str(capture))}"
    )
    if keep:
        say(f"logs kept in {workdir}")
    return 0 if outcome.ok else 1


class _SignalStop:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) all stop the run the same way.

    The handler only starts a thread: it stops every program the run started
    (:data:`runners.STARTED`, by process group) and closes the TUI; the run's
    own waits then see their peers gone and unwind through the usual clean-up.
    If that does not end within ``GRACE_S`` (a TUI writing to a closed terminal
    can block for ever), the thread runs ``last_resort`` and exits the process.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    GRACE_S = 2.0

    def __init__(self, last_resort: Callable[[], object]) -> None:
        self.signum: int | None = None
        self.app: Any = None  # the TUI, while it runs
        self.last_resort = last_resort
        self._old: dict[int, Any] = {}
        self._done = threading.Event()

    def __enter__(self) -> _SignalStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            threading.Thread(target=self._stop, name="vuinspect-demo-stop", daemon=True).start()

    def _stop(self) -> None:
        app = self.app
        if app is not None:
            with contextlib.suppress(Exception):  # not running (yet, or any more)
                app.call_from_thread(app.exit)
        runners.STARTED.stop_all()
        if not self._done.wait(self.GRACE_S) and self.signum is not None:
            self.last_resort()
            os._exit(128 + self.signum)


def _self_command() -> str:
    """How to run this vuinspect from the user's shell: the bare name only when PATH finds
    this very one (a venv's entry point is often not on PATH: ``make demo``)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "__main__.py" or not os.path.isfile(argv0):
        entry = os.path.join(os.path.dirname(sys.executable), "vuinspect")  # python -m vuinspect
        if not os.access(entry, os.X_OK):
            return f"{shlex.quote(sys.executable)} -m vuinspect"
    else:
        entry = argv0
    found = shutil.which("vuinspect")
    with contextlib.suppress(OSError):
        if found and os.path.samefile(found, entry):
            return "vuinspect"
    path = os.path.abspath(entry)
    rel = os.path.relpath(path)
    if not rel.startswith(os.pardir + os.sep):
        path = rel if os.sep in rel else os.path.join(os.curdir, rel)
    return shlex.quote(path)


def _run_backend(
    args: argparse.Namespace, workdir: Path, via: scenarios.ProxySpec, say: scenarios.Show
) -> scenarios.Outcome:
    if args.backend == "net":
        return scenarios.run_net(workdir, via=via, show=say, timeout=args.timeout)
    say("building (or reusing) the guest: scripts/build-guest.sh")
    guest = build_guest()
    run_one = scenarios.run_blk if args.backend == "blk" else scenarios.run_fs
    return run_one(workdir, guest, via=via, show=say, timeout=args.timeout)


def _run_with_tui(
    args: argparse.Namespace, workdir: Path, capture: Path, stop: _SignalStop
) -> scenarios.Outcome:
    """Run the back-end on a thread while the TUI follows the capture the proxy writes."""
    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.launch import crash_error, run_app
    from vuinspect.tui.sources import FileSource

    capture.unlink(missing_ok=True)  # never show a previous run's capture
    log: list[str] = []
    outcomes: list[scenarios.Outcome] = []  # (filled by the run thread)
    errors: list[BaseException] = []
    crash: str | None = None

    def work() -> None:
        try:
            outcomes.append(_run_backend(args, workdir, scenarios.ProxySpec(capture), log.append))
        except BaseException as exc:  # noqa: BLE001 - reported after the TUI closes
            errors.append(exc)

    thread = threading.Thread(target=work, name="vuinspect-demo", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60 + args.timeout
    while not (capture.exists() and capture.stat().st_size > 0):
        if not thread.is_alive() or time.monotonic() > deadline or stop.signum is not None:
            thread.join()
            break
        time.sleep(0.05)
    if capture.exists() and stop.signum is None:
        source = FileSource(str(capture), follow=True)
        app = VuInspectApp(source)
        stop.app = app

        def announce() -> None:
            thread.join()
            text = (
                f"{'OK' if outcomes[0].ok else 'FAILED'}: {outcomes[0].verdict}"
                if outcomes
                else f"run failed: {errors[0] if errors else 'no outcome'}"
            )
            with contextlib.suppress(RuntimeError):  # the user may have quit already
                app.call_from_thread(app.notify, text + " — press q to quit", timeout=30)

        threading.Thread(target=announce, daemon=True).start()
        try:
            crash = run_app(app)
        finally:
            stop.app = None
            source.close()
    if thread.is_alive():
        with contextlib.suppress(OSError):
            print("demo: waiting for the run to finish ...", file=sys.stderr, flush=True)
        thread.join()
    with contextlib.suppress(OSError):
        for line in log:
            print(f"demo: {line}", file=sys.stderr)
    if crash is not None and stop.signum is None:  # (a closed terminal is no TUI error)
        raise crash_error(crash)
    if errors:
        raise errors[0]
    return outcomes[0]
