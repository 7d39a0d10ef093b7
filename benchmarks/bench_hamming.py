"""Speed of the Hamming index against FAISS, one query at a time on one thread.

Codes are signs of random projections of clustered data (Gaussian clusters); the queries are fresh
draws from the same mixture, so none is in the database. Every structure answers the same queries
in the same run; the exact k-NN rows are checked to return the flat index's distances.

    python benchmarks/bench_hamming.py --n 1000000 --queries 200 --bits 32 64 --k 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from hashae.index.backends.local.hamming import HammingIndex

BALL_RADII = (1, 2, 3)


@dataclass(frozen=True)
class Row:
    structure: str
    bits: int
    median_us: float
    speedup_vs_flat: float | None = None
    identical_distances: bool | None = None  # k-NN: the flat index's distances; balls: its counts


def clustered_codes(
    *, n: int, nqueries: int, nbits: int, dim: int, clusters: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Database and query codes: sign of random projections of a Gaussian mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    projection = rng.standard_normal((dim, nbits), dtype=np.float32)

    def draw(count: int) -> np.ndarray:
        points = centres[rng.integers(0, clusters, count)]
        points += spread * rng.standard_normal((count, dim), dtype=np.float32)
        return np.packbits(points @ projection > 0, axis=-1)

    return draw(n), draw(nqueries)


def time_interleaved(answerers: dict[str, Callable], queries: np.ndarray, *, block: int = 25):
    """Median microseconds per query of each answerer, and its answers.

    The answerers take turns, a block of queries each, so that load from other processes on a shared
    machine falls on all of them alike while each still runs with its own data in cache, as it
    would serving queries. One warm-up call each first.
    """
    for answer in answerers.values():
        answer(queries[:1])
    seconds = {name: [] for name in answerers}
    answers = {name: [] for name in answerers}
    for first in range(0, len(queries), block):
        for name, answer in answerers.items():
            for i in range(first, min(first + block, len(queries))):
                start = time.perf_counter()
                answers[name].append(answer(queries[i : i + 1]))
                seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(s) * 1e6) for name, s in seconds.items()}, answers


def bench_bits(args: argparse.Namespace, nbits: int) -> tuple[list[Row], dict]:
    database, queries = clustered_codes(
        n=args.n, nqueries=args.queries, nbits=nbits, dim=args.dim,
        clusters=args.clusters, spread=args.spread, seed=args.seed,
    )
    flat = faiss.IndexBinaryFlat(nbits)
    flat.add(database)
    start = time.perf_counter()
    index = HammingIndex(nbits)
    index.add(database, np.arange(args.n, dtype=np.int64))
    index.search(queries[:1], k=args.k)  # builds the hash tables
    build_s = time.perf_counter() - start

    k = args.k
    knn = {
        "FAISS IndexBinaryFlat, exact k-NN": lambda q: flat.search(q, k),
        "HammingIndex (MIH), exact k-NN": lambda q: index.search(q, k=k),
        "HammingIndex, exact k-NN, forced probe": lambda q: index.search(q, k=k, strategy="probe"),
        "HammingIndex, exact k-NN, forced scan": lambda q: index.search(q, k=k, strategy="scan"),
    }
    medians, answers = time_interleaved(knn, queries)
    flat_name, *our_names = knn
    flat_us = medians[flat_name]
    truth = [distances for distances, _ in answers[flat_name]]
    rows = [Row(flat_name, nbits, flat_us)]
    for name in our_names:
        identical = all(np.array_equal(t, d) for t, (d, _) in zip(truth, answers[name]))
        rows.append(Row(name, nbits, medians[name], flat_us / medians[name], identical))
    rows += bench_balls(index, flat, database, queries, nbits, args.faiss_hash)

    # FAISS breaks distance ties its own way; ours breaks them by id, whichever path answers
    same_ids = all(
        all(np.array_equal(a[1], b[1]) for a, b in zip(answers[our_names[0]], answers[name]))
        for name in our_names[1:]
    )
    extra = {
        "bits": nbits,
        "build_seconds": round(build_s, 3),
        "index_megabytes": round(index.nbytes / 2**20, 1),
        "codes_megabytes": round(database.nbytes / 2**20, 1),
        "substrings": index.substrings,
        "ids_identical_across_auto_probe_scan": same_ids,
        "kth_distance_percentiles_0_50_90_100": np.percentile(
            [a[0, -1] for a in truth], [0, 50, 90, 100]
        ).tolist(),
    }
    return rows, extra


def bench_balls(index, flat, database, queries, nbits: int, with_faiss_hash: bool) -> list[Row]:
    """Hamming-ball timings; each ball checked to hold as many items as a FAISS flat range search."""
    faiss_hash = None
    if with_faiss_hash:
        faiss_hash = faiss.IndexBinaryHash(nbits, nbits)
        faiss_hash.add(database)
    rows = []
    for radius in BALL_RADII:
        balls = {
            f"HammingIndex (MIH), ball r <= {radius}": lambda q: len(index.range_search(q, radius=radius)[0][1])
        }
        if faiss_hash is not None:
            faiss_hash.nflip = radius
            hash_name = f"FAISS IndexBinaryHash, ball r <= {radius}"
            balls[hash_name] = lambda q: len(faiss_hash.range_search(q, radius + 1)[2])
        medians, answers = time_interleaved(balls, queries)
        truth = [len(flat.range_search(q[None], radius + 1)[2]) for q in queries]
        for name, median_us in medians.items():
            rows.append(Row(name, nbits, median_us, None, answers[name] == truth))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"| {'structure':<44} | bits | median us | speed-up vs flat | identical |")
    print(f"|{'-' * 46}|------|-----------|------------------|-----------|")
    for row in rows:
        speedup = f"{row.speedup_vs_flat:.1f}x" if row.speedup_vs_flat else "-"
        same = {None: "-", True: "yes", False: "NO"}[row.identical_distances]
        print(f"| {row.structure:<44} | {row.bits:>4} | {row.median_us:>9.1f} | {speedup:>16} | {same:>9} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="database codes")
    parser.add_argument("--queries", type=int, default=200, help="queries, answered one at a time")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64], help="code lengths")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--dim", type=int, default=64, help="dimension of the clustered data")
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters")
    parser.add_argument("--spread", type=float, default=0.5, help="cluster std (centres ~ N(0, I))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-faiss-hash", dest="faiss_hash", action="store_false",
                        help="skip the FAISS IndexBinaryHash ball rows")
    parser.add_argument("--json", help="write rows and settings to this file")
    args = parser.parse_args()

    faiss.omp_set_num_threads(1)
    rows, extras = [], []
    for nbits in args.bits:
        bits_rows, extra = bench_bits(args, nbits)
        rows += bits_rows
        extras.append(extra)
    print_table(rows)
    for extra in extras:
        print(json.dumps(extra))
    if args.json:
        report = {
            "settings": vars(args),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "machine": platform.processor() or platform.machine(),
            "rows": [asdict(r) for r in rows],
            "per_bits": extras,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
