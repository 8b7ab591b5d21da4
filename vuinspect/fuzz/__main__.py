"""The long fuzzing run: ``python -m vuinspect.fuzz --inputs 1000000 --jobs 2``.

Input ``i`` is derived from ``random.Random(seed + i)`` alone, so any failure
is reproduced with ``--seed <i> --inputs 1``.  Even inputs go through
the decoder as mutated frame sequences, odd ones through the capture reader
as mutated pcapng files (every fourth of those also through the index).  Failing inputs are saved (``--save DIR``) as a
pickle of the frames (as tuples of Frame fields) or the raw capture bytes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import TypedDict

from vuinspect.frames import Frame
from vuinspect.fuzz.check import check_capture_bytes, check_frames
from vuinspect.fuzz.mutate import capture_bytes, mutate_capture, mutate_frames


def corpus(capture_dir: str | None) -> tuple[list[list[Frame]], list[bytes]]:
    """Seed inputs: the sample lifecycles and any real captures in ``capture_dir``."""
    from vuinspect.capture import read_frames
    from vuinspect.samples import device_start, every_message

    frames = [device_start(), every_message()]
    if capture_dir and os.path.isdir(capture_dir):
        for p in sorted(Path(capture_dir).glob("*.pcapng")):
            frames.append(list(read_frames(p)))
    captures = [capture_bytes(f) for f in frames] + [capture_bytes(frames[0], big_endian=True)]
    return frames, captures


class _Result(TypedDict):
    """What one work unit sends back to the parent process."""

    stats: Counter[str]
    failures: list[str]


def _work(task: tuple[int, int, str | None, str | None]) -> _Result:
    """Run inputs [start, start + count); return counters and the first failures."""
    start, count, capture_dir, save = task
    frames_corpus, capture_corpus = corpus(capture_dir)
    stats: Counter[str] = Counter()
    failures: list[str] = []
    for i in range(start, start + count):
        rng = random.Random(i)
        if i % 2 == 0:
            data: list[Frame] | bytes = mutate_frames(rng.choice(frames_corpus), rng)
            target = "decoder"
        else:
            data = mutate_capture(rng.choice(capture_corpus), rng)
            target = "reader"
        try:
            if not isinstance(data, bytes):  # target == "decoder"
                out = check_frames(data)
            else:
                out = check_capture_bytes(data, index=i % 8 == 1)
                stats["reader_" + out.reader] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
            stats["failures"] += 1
            if len(failures) < 20:
                failures.append(f"input {i} ({target}): {exc!r}\n{traceback.format_exc(limit=-4)}")
            if save:  # frames as plain tuples: Frame (frozen, slots) does not unpickle on 3.10/3.11
                plain = (
                    data
                    if isinstance(data, bytes)
                    else [tuple(getattr(fr, k) for k in Frame.__slots__) for fr in data]
                )
                with open(os.path.join(save, f"fail-{i}-{target}.pickle"), "wb") as f:
                    pickle.dump(plain, f)
            continue
        stats[target] += 1
        stats["messages"] += out.messages
        stats["raw_chunks"] += out.raw_chunks
        stats["reencoded"] += out.reencoded
        for code, n in out.problems.items():
            stats["problem:" + code] += n
    return {"stats": stats, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vuinspect.fuzz", description=__doc__.splitlines()[0]
    )
    p.add_argument("--inputs", type=int, default=10000, help="number of inputs (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="first input number (default 0)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--captures", default="captures", help="directory of real captures to mutate")
    p.add_argument("--save", metavar="DIR", help="save failing inputs here")
    p.add_argument("--batch", type=int, default=5000, help="inputs per work unit")
    args = p.parse_args(argv)
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    tasks = [
        (s, min(args.batch, args.seed + args.inputs - s), args.captures, args.save)
        for s in range(args.seed, args.seed + args.inputs, args.batch)
    ]
    total: Counter[str] = Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    done = 0
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        for result in pool.imap_unordered(_work, tasks):
            total.update(result["stats"])
            failures.extend(result["failures"])
            done += 1
            if done % 20 == 0 or done == len(tasks):
                n = total["decoder"] + total["reader"] + total["failures"]
                print(
                    f"{n} inputs, {total['failures']} failures, {time.monotonic() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    elapsed = time.monotonic() - t0
    print(
        f"inputs: {args.inputs} (seeds {args.seed}..{args.seed + args.inputs - 1}) in {elapsed:.0f} s"
    )
    print(
        f"decoder inputs: {total['decoder']}  reader inputs: {total['reader']} "
        f"(ok {total['reader_ok']}, damaged {total['reader_damaged']}, "
        f"refused {total['reader_refused']})"
    )
    print(
        f"messages decoded: {total['messages']}  raw chunks: {total['raw_chunks']}  "
        f"re-encoded exactly: {total['reencoded']}"
    )
    codes = sorted((k[8:], v) for k, v in total.items() if k.startswith("problem:"))
    print("problems seen: " + ", ".join(f"{k} {v}" for k, v in codes))
    print(f"failures: {total['failures']}")
    for text in failures[:20]:
        print(text)
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
