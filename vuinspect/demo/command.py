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
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from vuinspect.errors import CliError

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
        with lock:
            print(f"demo: {line}", file=sys.stderr, flush=True)

    def show(line: str) -> None:
        if not args.quiet and line.strip():
            with lock:
                print(line, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="vuinspect-demo-", dir="/tmp"))  # short socket paths
    keep = args.keep
    start = time.monotonic()
    use_tui = not (args.quiet or args.no_tui) and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        if use_tui:
            outcome = _run_with_tui(args, workdir, capture)
        else:
            outcome = _run_backend(args, workdir, scenarios.ProxySpec(capture, show=show), say)
    except runners.MissingProgram as exc:
        raise CliError(str(exc)) from None
    except runners.RunError as exc:
        keep = True
        first, *rest = str(exc).splitlines()
        if rest:
            say("\n".join(rest))
        raise CliError(f"{first} (logs in {workdir})") from None
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"{'OK' if outcome.ok else 'FAILED'}: {outcome.verdict}")
    say(
        f"capture: {capture} ({time.monotonic() - start:.1f}s); read it with: vuinspect read {capture}"
    )
    if keep:
        say(f"logs kept in {workdir}")
    return 0 if outcome.ok else 1


def _run_backend(
    args: argparse.Namespace, workdir: Path, via: scenarios.ProxySpec, say: scenarios.Show
) -> scenarios.Outcome:
    if args.backend == "net":
        return scenarios.run_net(workdir, via=via, show=say, timeout=args.timeout)
    say("building (or reusing) the guest: scripts/build-guest.sh")
    guest = build_guest()
    run_one = scenarios.run_blk if args.backend == "blk" else scenarios.run_fs
    return run_one(workdir, guest, via=via, show=say, timeout=args.timeout)


def _run_with_tui(args: argparse.Namespace, workdir: Path, capture: Path) -> scenarios.Outcome:
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
        if not thread.is_alive() or time.monotonic() > deadline:
            thread.join()
            break
        time.sleep(0.05)
    if capture.exists():
        source = FileSource(str(capture), follow=True)
        app = VuInspectApp(source)

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
            source.close()
    if thread.is_alive():
        print("demo: waiting for the run to finish ...", file=sys.stderr, flush=True)
        thread.join()
    for line in log:
        print(f"demo: {line}", file=sys.stderr)
    if crash is not None:
        raise crash_error(crash)
    if errors:
        raise errors[0]
    return outcomes[0]
