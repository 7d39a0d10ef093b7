"""Soak test: random SIGKILLs of `hashae index`, corrupt files, concurrent readers and writers, for
as long as asked. Prints the figures (trials, kills, failures, items lost: the last two must be 0).

    OMP_NUM_THREADS=1 python benchmarks/soak.py --seconds 300 [--seed 0] [--work DIR]

Each trial adds a few good and corrupt images to the folder (most trials), starts one or two
`hashae index` runs at once (a second writer must be refused by the write lock in one line) and
SIGKILLs each at a random moment, while two reader threads keep opening the store. After every
trial the store must read and still hold every item it had committed, with the same codes; a
reader must never see a generation go backwards. Every few trials a run is let finish and the
store is compared with an uninterrupted run from the state before those trials (same items, codes
and skipped files), and `hashae check` must pass. The same machinery runs for seconds in
tests/test_faults.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from faults import ENV, REPO, Readers, Tally, add_files, committed_state, finish_and_compare, hashae, killed_runs  # noqa: E402

from conftest import draw_images  # noqa: E402

COMPARE_EVERY = 6  # trials between two comparisons with an uninterrupted run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="How long to run trials (the last comparison comes after).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initial", type=int, default=200, help="Images indexed (and trained on) before the trials.")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one, removed after).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hashae-soak-"))
    try:
        figures = soak(work, seconds=args.seconds, seed=args.seed, initial=args.initial)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    sys.exit(1 if figures["failures"] or figures["items_lost"] else 0)


def soak(work: Path, *, seconds: float, seed: int, initial: int) -> dict:
    folder, store, start = work / "images", work / "store", work / "start"
    rng = np.random.default_rng(seed)
    draw_images(folder / "initial", initial, seed=seed, classes=True)
    done = subprocess.run(hashae("index", folder, "--store", store, "-q", "--epochs", "1"), capture_output=True, text=True, env=ENV, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"the first index run failed: {done.stderr.strip()}")
    shutil.copytree(store, start)
    tally, batch, began = Tally(), 0, time.monotonic()
    with Readers(store, tally, threads=2):
        while time.monotonic() - began < seconds:
            if rng.random() < 0.8:
                add_files(folder, batch=batch, good=int(rng.integers(5, 80)), rng=rng)
                batch += 1
            writers = 2 if rng.random() < 0.3 else 1
            killed_runs(folder, store, delays=rng.uniform(0.2, 8.0, writers).tolist(), tally=tally)
            if tally.trials % COMPARE_EVERY == 0:
                finish_and_compare(folder, store, start, tally, scratch=work)
                shutil.rmtree(start)
                shutil.copytree(store, start)
        finish_and_compare(folder, store, start, tally, scratch=work)
    figures = {
        **tally.summary(),
        "seconds": round(time.monotonic() - began, 1),
        "seed": seed,
        "items_at_end": len(committed_state(store)[1]),
        "generation_at_end": committed_state(store)[0],
        "failure_messages": tally.failures[:20],
    }
    return figures


if __name__ == "__main__":
    main()
