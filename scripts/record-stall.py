"""Record captures/blk-stall.pcapng: the blk demo's run with its back-end stopped mid-write.

    .venv/bin/python scripts/record-stall.py captures/blk-stall.pcapng

qemu-storage-daemon, ``vuinspect proxy --rings on -w FILE`` and QEMU (TCG) booting
the demo's guest (``vuinspect demo``'s blk run); once the guest's I/O is under way
(its kernel's vring 0 has moved) the back-end gets SIGSTOP for ``--stall`` seconds,
then SIGCONT, and the guest finishes its write and read-back.  The capture then shows
what a stalled back-end looks like: ring samples with requests in flight, the
``backend_stalled`` diagnosis, and its end when the ring moves again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from vuinspect.demo.guest import build_guest
from vuinspect.demo.scenarios import ProxySpec, blk_running, io_under_way


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--stall", type=float, default=3.5, help="seconds the back-end is stopped")
    ap.add_argument("--size-kib", type=int, default=4096, help="what the guest writes")
    args = ap.parse_args()
    guest = build_guest()
    with tempfile.TemporaryDirectory(prefix="vuinspect-stall-") as tmp:
        work = Path(tmp)
        capture = work / "blk.pcapng"
        via = ProxySpec(capture, extra=["-q", "--rings", "on"])
        with blk_running(work, guest, via=via, seed="stall", size_kib=args.size_kib) as run:
            end = time.monotonic() + 120
            while not io_under_way(capture):
                if time.monotonic() > end:
                    print("the guest's I/O never showed in the ring samples", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            run.stop_backend()
            time.sleep(args.stall)
            run.continue_backend()
            ok, verdict = run.verdict(180)
            time.sleep(0.5)  # the sampler's last look (every 100 ms) before QEMU stops
        print(verdict)
        if not ok or not run.disk_holds_pattern():
            print("the guest's check failed: nothing written", file=sys.stderr)
            return 1
        shutil.copyfile(capture, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
