"""Fault injection on real processes: `hashae index` runs killed with SIGKILL at random moments on a
folder that grows with good and corrupt files, while readers in other threads keep opening the
store. Used by tests/test_faults.py (a few trials, seconds) and benchmarks/soak.py (minutes).

What must hold after every trial: the store opens and reads; no item a committed generation held is
lost or changed; a reader never sees a generation go backwards or an item's code change; and once
a run is let finish, the store equals the one an uninterrupted run makes from the same start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import draw_images  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def hashae(*args: str) -> list[str]:
    """The command line of `hashae ARGS` in this interpreter."""
    return [sys.executable, "-c", "from hashae.cli.main import main; main()", *map(str, args)]


def run_hashae(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(hashae(*args), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


def index_command(folder: Path, store: Path) -> list[str]:
    return hashae("index", folder, "--store", store, "-q", "--executor", "sequential", "--batch-size", "16")


CORRUPT_FILES = {
    "truncated.png": lambda png: png[: len(png) // 3],
    "text.png": lambda png: b"this is not an image\n" * 10,
    "empty.jpg": lambda png: b"",
    "garbage.png": lambda png: png[:16] + bytes(range(256)) * 4,
}


def add_files(folder: Path, *, batch: int, good: int, rng: np.random.Generator) -> None:
    """Add `good` drawn images and one of each corrupt file under folder/batch-N."""
    target = folder / f"batch-{batch}"
    draw_images(target, good, seed=int(rng.integers(1 << 30)), classes=False, prefix=f"b{batch}")
    sample = next(target.glob("*.png")).read_bytes()
    for name, make in CORRUPT_FILES.items():
        (target / f"b{batch}-{name}").write_bytes(make(sample))


def committed_state(store: Path) -> tuple[int, dict[str, bytes]]:
    """(generation, {path: code bytes}) of the newest committed generation, read as a reader does."""
    from hashae.index.backends import open_store

    with open_store(store) as opened:
        view = opened.snapshot()
        ids = view.item_ids()
        items = view.items(ids)
        codes = view.codes_of(ids)
        return view.gen, {items[int(i)].path: codes[row].tobytes() for row, i in enumerate(ids)}


def skipped_paths(store: Path) -> set[str]:
    from hashae.index.backends import open_store

    with open_store(store) as opened:
        return {entry.path for entry in opened.skipped()}


@dataclass
class Tally:
    """What the trials found."""

    trials: int = 0
    killed: int = 0
    finished: int = 0
    lock_refusals: int = 0
    reads: int = 0
    items_lost: int = 0
    comparisons: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "trials": self.trials, "killed": self.killed, "finished": self.finished,
            "lock_refusals": self.lock_refusals, "reads": self.reads, "items_lost": self.items_lost,
            "comparisons": self.comparisons, "failures": len(self.failures),
        }  # fmt: skip


def compare_states(before: dict[str, bytes], after: dict[str, bytes], tally: Tally, *, what: str) -> None:
    """Every item of `before` is in `after` with the same code (files are only ever added)."""
    lost = [path for path in before if path not in after]
    changed = [path for path in before if path in after and after[path] != before[path]]
    tally.items_lost += len(lost)
    if lost or changed:
        tally.failures.append(f"{what}: {len(lost)} committed items lost, {len(changed)} codes changed (e.g. {(lost + changed)[:3]})")


class Readers:
    """Threads that open the store and read its newest generation over and over while writers run.
    A reader must never see the generation go backwards or a committed item vanish or change."""

    def __init__(self, store: Path, tally: Tally, *, threads: int = 2) -> None:
        self.store, self.tally = store, tally
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _read(self) -> None:
        seen_gen, seen = 0, {}
        while not self._stop.is_set():
            try:
                gen, state = committed_state(self.store)
            except Exception as error:  # noqa: BLE001 - any failure to read is what we count
                with self._lock:
                    self.tally.failures.append(f"reader: {type(error).__name__}: {error}")
                return
            with self._lock:
                self.tally.reads += 1
                if gen < seen_gen:
                    self.tally.failures.append(f"reader: generation went back from {seen_gen} to {gen}")
                compare_states(seen, state, self.tally, what=f"reader at generation {gen}")
            seen_gen, seen = gen, state
            time.sleep(0.05)


def killed_run(folder: Path, store: Path, *, delay: float, tally: Tally) -> None:
    """Start `hashae index`, SIGKILL it after `delay` seconds (unless it finished), then check that
    the store still reads and lost nothing it had committed before."""
    killed_runs(folder, store, delays=[delay], tally=tally)


def killed_runs(folder: Path, store: Path, *, delays: list[float], tally: Tally) -> None:
    """Start one `hashae index` per delay at once (concurrent writers: all but one must be refused
    by the write lock, in one line), SIGKILL each after its delay unless it ended, then check that
    the store still reads and lost nothing it had committed before. One trial."""
    _, before = committed_state(store)
    started = time.monotonic()
    processes = [
        (delay, subprocess.Popen(index_command(folder, store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=REPO))
        for delay in delays
    ]
    for delay, process in sorted(processes, key=lambda pair: pair[0]):
        try:
            process.wait(timeout=max(0.0, started + delay - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        stderr = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        if process.returncode == -signal.SIGKILL:
            tally.killed += 1
        elif process.returncode == 0:
            tally.finished += 1
        elif "another hashae writer" in stderr and len(stderr.strip().splitlines()) == 1:
            tally.lock_refusals += 1
        else:
            tally.failures.append(f"index exited {process.returncode}: {stderr.strip()[-300:]}")
    tally.trials += 1
    try:
        _, after = committed_state(store)
    except Exception as error:  # noqa: BLE001 - any failure to read is what we count
        tally.failures.append(f"store unreadable after a kill: {type(error).__name__}: {error}")
        return
    compare_states(before, after, tally, what="after a kill")


def finish_and_compare(folder: Path, store: Path, start: Path, tally: Tally, *, scratch: Path) -> None:
    """Let a run finish on the killed store, and compare it with an uninterrupted run from `start`
    (a copy of the store before any trial) on the same folder: same items, codes and skipped files."""
    done = subprocess.run(index_command(folder, store), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    if done.returncode != 0:
        tally.failures.append(f"the finishing run failed: {done.stderr.strip()[-300:]}")
        return
    reference = scratch / "uninterrupted"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.copytree(start, reference)
    done = subprocess.run(index_command(folder, reference), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    if done.returncode != 0:
        tally.failures.append(f"the uninterrupted run failed: {done.stderr.strip()[-300:]}")
        return
    _, got = committed_state(store)
    _, expected = committed_state(reference)
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        differ = sorted(p for p in set(got) & set(expected) if got[p] != expected[p])
        tally.items_lost += len(missing)
        tally.failures.append(f"re-run differs from an uninterrupted run: missing {missing[:3]}, extra {extra[:3]}, codes {differ[:3]}")
    if skipped_paths(store) != skipped_paths(reference):
        tally.failures.append("re-run's skipped files differ from an uninterrupted run's")
    tally.comparisons += 1
    check = run_hashae("check", "--store", store)
    if check.returncode != 0:
        tally.failures.append(f"hashae check after the trials: {check.stderr.strip()[-300:]}")
