"""The index issue's numbers, measured through the real CLI in fresh processes.

1. first run: `hashae index` on the 60,000 Fashion-MNIST train PNGs into an empty store (train the
   hashing AE and the VAE, encode, store): wall time and stage times.
2. indexing throughput with trained models: a store trained (1 epoch) on the first 2,000 train
   PNGs then indexes all 70,000 PNGs (train + test); images per second of the encode stage
   (read, decode, encode, one SQLite transaction per batch) and of the whole run.
3. cold `hashae query IMG`: median wall time of 10 runs in new processes against the first store.

    python benchmarks/bench_index.py --work /tmp/hashae-bench-index --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HASHAE = [sys.executable, "-m", "hashae.cli.main"]


def run(*args: str) -> tuple[float, str]:
    """Run a hashae command; (wall seconds, stdout). Fails loudly on a non-zero exit."""
    started = time.perf_counter()
    done = subprocess.run([*HASHAE, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"hashae {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def export(folder: Path, *splits: str, limit: int | None = None) -> None:
    if folder.is_dir():
        return
    for split in splits:
        run("datasets", "export", "fashion-mnist", str(folder), "--split", split, "--quiet", *(["--limit", str(limit)] if limit else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hashae-bench-index"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-first-run", action="store_true", help="only measure throughput and cold queries")
    args = parser.parse_args()
    work = args.work
    train60, all70, small = work / "train60", work / "all70", work / "small2k"
    export(train60, "train")
    export(all70, "train", "test")
    export(small, "train", limit=2000)
    report: dict = {}

    first_store = work / "store-first"
    if not args.skip_first_run:
        shutil.rmtree(first_store, ignore_errors=True)
        seconds, out = run("index", str(train60), "--store", str(first_store), "--quiet", "--json")
        summary = json.loads(out)
        report["first_run"] = {"items": summary["indexed"], "wall_s": round(seconds, 1), "stages": summary["stages"]}
        print(f"first run on {summary['indexed']} PNGs: {seconds:.1f} s wall, stages {summary['stages']}")

    store = work / "store-throughput"
    shutil.rmtree(store, ignore_errors=True)
    run("index", str(small), "--store", str(store), "--epochs", "1", "--quiet")
    seconds, out = run("index", str(all70), "--store", str(store), "--quiet", "--json")
    summary = json.loads(out)
    encoded = summary["indexed"]
    report["throughput"] = {
        "encoded": encoded,
        "unchanged": summary["unchanged"],
        "encode_stage_s": summary["stages"]["encode"],
        "images_per_s_encode_stage": round(encoded / summary["stages"]["encode"]),
        "images_per_s_whole_run": round(encoded / seconds),
        "wall_s": round(seconds, 1),
        "stages": summary["stages"],
    }
    print(f"indexing with trained models: {report['throughput']}")

    query_store = first_store if first_store.is_dir() else store
    image = sorted((all70 / "Bag").glob("*.png"))[0]
    times = [run("query", str(image), "--store", str(query_store), "-k", "10")[0] for _ in range(10)]
    report["cold_query"] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}
    print(f"cold query: median {statistics.median(times):.3f} s over 10 runs")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
