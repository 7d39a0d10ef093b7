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

from index.hamming import HammingIndex

BALL_RADII = (1, 2, 3)


@dataclass(frozen=True)
class Row:
    structure: str
    bits: int
    median_us: float
    speedup_vs_flat: float | None = None
    identical_distances: bool | None = None


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


def time_per_query(answer: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, list]:
    """Median microseconds of answer(one query), after one warm-up call; also the answers."""
    answer(queries[:1])
    seconds, answers = [], []
    for i in range(len(queries)):
        start = time.perf_counter()
        answers.append(answer(queries[i : i + 1]))
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds) * 1e6), answers


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

    flat_us, flat_answers = time_per_query(lambda q: flat.search(q, args.k)[0], queries)
    ours_us, ours_answers = time_per_query(lambda q: index.search(q, k=args.k)[0], queries)
    identical = all(np.array_equal(a, b) for a, b in zip(flat_answers, ours_answers))
    rows = [
        Row("FAISS IndexBinaryFlat, exact k-NN", nbits, flat_us),
        Row("HammingIndex (MIH), exact k-NN", nbits, ours_us, flat_us / ours_us, identical),
    ]
    for strategy in ("probe", "scan"):
        us, answers = time_per_query(lambda q: index.search(q, k=args.k, strategy=strategy)[0], queries)
        same = all(np.array_equal(a, b) for a, b in zip(flat_answers, answers))
        rows.append(Row(f"HammingIndex, exact k-NN, forced {strategy}", nbits, us, flat_us / us, same))
    rows += bench_balls(index, flat, database, queries, nbits, args.faiss_hash)

    extra = {
        "bits": nbits,
        "build_seconds": build_s,
        "substrings": index.substrings,
        "kth_distance_percentiles_0_50_90_100": np.percentile(
            [a[0, -1] for a in flat_answers], [0, 50, 90, 100]
        ).tolist(),
    }
    return rows, extra


def bench_balls(index, flat, database, queries, nbits: int, with_faiss_hash: bool) -> list[Row]:
    """Hamming-ball timings; each checked to hold as many items as a FAISS flat range search."""
    faiss_hash = None
    if with_faiss_hash:
        faiss_hash = faiss.IndexBinaryHash(nbits, nbits)
        faiss_hash.add(database)
    rows = []
    for radius in BALL_RADII:
        truth = [flat.range_search(q[None], radius + 1)[0][1] for q in queries]
        us, answers = time_per_query(lambda q: index.range_search(q, radius=radius)[0], queries)
        same = all(len(a[0]) == t for a, t in zip(answers, truth))
        rows.append(Row(f"HammingIndex (MIH), ball r <= {radius}", nbits, us, None, same))
        if faiss_hash is not None:
            faiss_hash.nflip = radius
            us, answers = time_per_query(lambda q: faiss_hash.range_search(q, radius + 1)[0][1], queries)
            same = all(a == t for a, t in zip(answers, truth))
            rows.append(Row(f"FAISS IndexBinaryHash, ball r <= {radius}", nbits, us, None, same))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"| {'structure':<44} | bits | median us | speed-up vs flat | identical |")
    print(f"|{'-' * 46}|------|-----------|------------------|-----------|")
    for row in rows:
        speedup = f"{row.speedup_vs_flat:.1f}x" if row.speedup_vs_flat else "-"
        same = {None: "-", True: "yes", False: "NO"}[row.identical_distances]
        print(f"| {row.structure:<44} | {row.bits:>4} | {row.median_us:>9.1f} | {speedup:>16} | {same:>9} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="database codes")
    parser.add_argument("--queries", type=int, default=200, help="queries, answered one at a time")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64], help="code lengths")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--dim", type=int, default=64, help="dimension of the clustered data")
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters")
    parser.add_argument("--spread", type=float, default=0.5, help="cluster standard deviation (centres ~ N(0, I))")
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
