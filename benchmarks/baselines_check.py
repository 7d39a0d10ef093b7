"""Check the classic hash baselines against the anchor numbers of BENCHMARK.md.

Protocol: Fashion-MNIST IDX files, pixels / 255; database and training set = the 60,000 train images;
queries = test images numpy.random.default_rng(0).choice(10000, 1000, replace=False) (or all 10,000
with --all-queries). Prints mAP@1000, mAP(all), P@r<=2, empty-ball share, recall@10 and R10@100 for
LSH / PCAH / ITQ at 16 / 32 / 64 bits and raw pixels (float L2), next to the anchors.

    .venv/bin/python benchmarks/baselines_check.py [--data DIR] [--all-queries] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

from hashae.baselines import fit_hash
from hashae.metrics import evaluate_binary, evaluate_float, exact_neighbours

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
BITS = (16, 32, 64)

# BENCHMARK.md, "Measured here with exactly this protocol": (mAP@1000, P@r<=2, R10@100)
ANCHORS = {
    ("lsh", 16): (0.435, 0.408, 0.134),
    ("lsh", 32): (0.561, 0.521, 0.310),
    ("lsh", 64): (0.623, 0.115, 0.498),
    ("pcah", 16): (0.578, 0.575, 0.298),
    ("pcah", 32): (0.617, 0.553, 0.518),
    ("pcah", 64): (0.629, 0.016, 0.672),
    ("itq", 16): (0.594, 0.526, 0.182),
    ("itq", 32): (0.626, 0.625, 0.340),
    ("itq", 64): (0.659, 0.485, 0.523),
    ("raw pixels", 25088): (0.701, None, 1.000),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a numpy array: magic 0x00 0x00 dtype ndim, big-endian sizes, then data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (n, 784) in [0, 1], labels int64 (n,)) of one split ("train" or "t10k")."""
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32), labels.astype(np.int64)


def fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def print_row(name: str, bits: int, report: dict, seconds: float) -> None:
    anchor = ANCHORS.get((name, bits), (None, None, None))
    ours = (report["map_at_1000"], report["p_at_r2"], report["r10_at_100"])
    cells = "  ".join(f"{fmt(o)} ({fmt(a).strip()})" for o, a in zip(ours, anchor))
    extra = f"{fmt(report['map_all'])}  {fmt(report['empty_ball_share'])}  {fmt(report['recall_at_10'])}"
    print(f"{name:<10} {bits:>5}  {cells}   {extra}  {seconds:5.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--all-queries", action="store_true", help="all 10,000 test images as queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of LSH / ITQ")
    args = parser.parse_args()

    db_x, db_labels = load_split(args.data, "train")
    test_x, test_labels = load_split(args.data, "t10k")
    if args.all_queries:
        picked = np.arange(len(test_x))
    else:
        picked = np.random.default_rng(0).choice(10000, 1000, replace=False)
    query_x, query_labels = test_x[picked], test_labels[picked]

    start = time.perf_counter()
    truth = exact_neighbours(query_x, db_x, k=10)
    seconds = time.perf_counter() - start
    print(f"{len(query_x)} queries, {len(db_x)} database items; exact top-10 in {seconds:.1f}s")
    print("method      bits  mAP@1000 (anchor)  P@r<=2 (anchor)  R10@100 (anchor)   mAP-all  empty  R@10")

    for method in ("lsh", "pcah", "itq"):
        for nbits in BITS:
            start = time.perf_counter()
            hash_fn = fit_hash(method, db_x, nbits=nbits, seed=args.seed)
            report = evaluate_binary(
                hash_fn.encode(query_x), hash_fn.encode(db_x), query_labels, db_labels, truth=truth
            )
            print_row(method, nbits, report, time.perf_counter() - start)

    start = time.perf_counter()
    report = evaluate_float(query_x, db_x, query_labels, db_labels, truth=truth)
    print_row("raw pixels", db_x.shape[1] * 32, report, time.perf_counter() - start)


if __name__ == "__main__":
    main()
