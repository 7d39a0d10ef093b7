"""The index issue's numbers, measured through the real CLI in fresh processes.

1. first run: `hashae index` on the 60,000 Fashion-MNIST train PNGs into an empty store (train the
   hashing AE and the VAE, encode, store): wall time and stage times.
2. indexing throughput with trained models: a folder holds the first 2,000 train PNGs and is
   indexed (1 epoch of training); then the other 68,000 PNGs of train + test are added to the same
   folder (hard links) and it is indexed again. Images per second of that run: of its encode stage
   (read, decode, encode, one catalogue transaction per batch) and of the whole run (process start
   to exit). With --runs N the run is repeated and the medians reported.
3. cold `hashae query IMG`: median wall time of 10 runs in new processes against the first store.

    python benchmarks/bench_index.py --work /tmp/hashae-bench-index --json out.json
    python benchmarks/bench_index.py --only throughput --runs 5
    python benchmarks/bench_index.py --only throughput --runs 5 --command "python -m hashae.cli.main"

--command names the hashae to measure (default: this Python's `-m hashae.cli.main`), so another
version can be measured back to back with the same folders; --index-args adds options to the
measured `hashae index` run (e.g. "--executor sequential").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_COMMAND = [sys.executable, "-m", "hashae.cli.main"]
SMALL = 2000  # PNGs the throughput store is trained on


def run(command: list[str], *args: str) -> tuple[float, str]:
    """Run a hashae command; (wall seconds, stdout). Fails loudly on a non-zero exit."""
    started = time.perf_counter()
    done = subprocess.run([*command, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"hashae {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def export(command: list[str], folder: Path, *splits: str) -> None:
    if folder.is_dir():
        return
    for split in splits:
        run(command, "datasets", "export", "fashion-mnist", str(folder), "--split", split, "--quiet")


def link_files(source: Path, target: Path, relpaths: list[str]) -> None:
    """Hard links target/relpath -> source/relpath: the same files (bytes and mtime), no copy."""
    for relpath in relpaths:
        (target / relpath).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / relpath, target / relpath)


def first_run(command: list[str], train60: Path, store: Path) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    seconds, out = run(command, "index", str(train60), "--store", str(store), "--quiet", "--json")
    summary = json.loads(out)
    print(f"first run on {summary['indexed']} PNGs: {seconds:.1f} s wall, stages {summary['stages']}")
    return {"items": summary["indexed"], "wall_s": round(seconds, 1), "stages": summary["stages"]}


def throughput_run(command: list[str], all70: Path, work: Path, index_args: list[str]) -> dict:
    """One measured run: a store trained on SMALL files, then the folder grown to 70,000 and indexed."""
    folder, store = work / "grow", work / "store-throughput"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    relpaths = sorted(str(p.relative_to(all70)) for p in all70.rglob("*.png"))
    first = [p for p in relpaths if Path(p).name.startswith("train_") and int(Path(p).stem[6:]) < SMALL]
    link_files(all70, folder, first)
    run(command, "index", str(folder), "--store", str(store), "--epochs", "1", "--quiet")
    link_files(all70, folder, sorted(set(relpaths) - set(first)))
    seconds, out = run(command, "index", str(folder), "--store", str(store), "--quiet", "--json", *index_args)
    summary = json.loads(out)
    encoded = summary["indexed"]
    result = {
        "encoded": encoded,
        "unchanged": summary["unchanged"],
        "encode_stage_s": summary["stages"]["encode"],
        "images_per_s_encode_stage": round(encoded / summary["stages"]["encode"]),
        "images_per_s_whole_run": round(encoded / seconds),
        "wall_s": round(seconds, 2),
        "stages": summary["stages"],
    }
    print(f"indexing with trained models: {result}", flush=True)
    return result


def cold_queries(command: list[str], all70: Path, store: Path) -> dict:
    image = sorted((all70 / "Bag").glob("*.png"))[0]
    times = [run(command, "query", str(image), "--store", str(store), "-k", "10")[0] for _ in range(10)]
    print(f"cold query: median {statistics.median(times):.3f} s over 10 runs")
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hashae-bench-index"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", choices=("first-run", "throughput", "query"), default=None, help="measure one part only")
    parser.add_argument("--skip-first-run", action="store_true", help="only measure throughput and cold queries")
    parser.add_argument("--runs", type=int, default=1, help="throughput runs (medians reported)")
    parser.add_argument("--command", default=None, help="the hashae command line to measure (default: this Python's -m hashae.cli.main)")
    parser.add_argument("--index-args", default="", help="extra options for the measured index run")
    args = parser.parse_args()
    command = shlex.split(args.command) if args.command else DEFAULT_COMMAND
    work = args.work
    train60, all70 = work / "train60", work / "all70"
    export(command, train60, "train")
    export(command, all70, "train", "test")
    parts = {args.only} if args.only else {"first-run", "throughput", "query"} - ({"first-run"} if args.skip_first_run else set())
    report: dict = {"command": command, "index_args": args.index_args}

    first_store = work / "store-first"
    if "first-run" in parts:
        report["first_run"] = first_run(command, train60, first_store)
    if "throughput" in parts:
        runs = [throughput_run(command, all70, work, shlex.split(args.index_args)) for _ in range(args.runs)]
        report["throughput_runs"] = runs
        report["throughput"] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("images_per_s_whole_run", "images_per_s_encode_stage", "wall_s", "encode_stage_s")
        }
        print(f"throughput, median of {len(runs)}: {report['throughput']}")
    if "query" in parts:
        store = first_store if first_store.is_dir() else work / "store-throughput"
        report["cold_query"] = cold_queries(command, all70, store)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
