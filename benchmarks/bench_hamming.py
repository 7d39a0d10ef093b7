"""Speed and memory of the Hamming index against FAISS, one query at a time on one thread.

Codes are signs of random projections of clustered data (Gaussian clusters), generated in chunks so
that 100 million fit; the queries are fresh draws from the same mixture (the same queries whatever
--n), so none is in the database. Each code length runs in its own process, which reports its own
peak resident memory.

Timing: the fast answerers (HammingIndex auto and forced probe) take turns by blocks of queries, in
alternating order, so that load from other processes falls on both alike and neither always runs
right after the other has warmed the caches for the same queries; the exhaustive ones (FAISS
IndexBinaryFlat and the forced scan) take turns the same way, apart, so that their sweeps through
memory do not evict the probing answerers' data. Exactness: on --exact-queries queries, every
strategy's ids and distances must equal a brute-force numpy sort by (distance, id), k-NN and balls.

    python benchmarks/bench_hamming.py --n 1000000 --bits 32 64 --json benchmarks/results/hamming-1m.json
    python benchmarks/bench_hamming.py --n 100000000 --bits 32 --scan-queries 40 --json ...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import faiss
import numpy as np

from hashae.index.backends.local.hamming import HammingIndex

BALL_RADII = (1, 2, 3)
CHUNK = 1 << 18  # codes generated per step: 64 MB of float32 points at dim 64
BRUTE_FORCE_CHUNK = 1 << 24


def clustered_codes(args: argparse.Namespace, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Database (n, nbits / 8) and query codes: signs of random projections of a Gaussian mixture."""
    seeds = np.random.SeedSequence(args.seed).spawn(3)
    model = np.random.default_rng(seeds[0])
    centres = model.standard_normal((args.clusters, args.dim), dtype=np.float32)
    projection = model.standard_normal((args.dim, nbits), dtype=np.float32)

    def draw(rng: np.random.Generator, out: np.ndarray) -> None:
        for first in range(0, len(out), CHUNK):
            count = min(CHUNK, len(out) - first)
            points = centres[rng.integers(0, args.clusters, count)]
            points += args.spread * rng.standard_normal((count, args.dim), dtype=np.float32)
            out[first : first + count] = np.packbits(points @ projection > 0, axis=-1)

    database = np.empty((args.n, nbits // 8), dtype=np.uint8)
    queries = np.empty((args.queries, nbits // 8), dtype=np.uint8)
    draw(np.random.default_rng(seeds[1]), database)
    draw(np.random.default_rng(seeds[2]), queries)
    return database, queries


def time_in_turns(answerers: dict[str, Callable], queries: np.ndarray, *, block: int = 25):
    """Median microseconds per query of each answerer, and its answers.

    The answerers take turns, a block of queries each, the order rotating from block to block. One
    warm-up call each first.
    """
    for answer in answerers.values():
        answer(queries[:1])
    seconds = {name: [] for name in answerers}
    answers = {name: [] for name in answerers}
    names = list(answerers)
    for turn, first in enumerate(range(0, len(queries), block)):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            for i in range(first, min(first + block, len(queries))):
                start = time.perf_counter()
                answers[name].append(answerers[name](queries[i : i + 1]))
                seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(s) * 1e6) for name, s in seconds.items()}, answers


def brute_force(database: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances (n,) uint8 of query to every code, by numpy popcount, in chunks."""
    distances = np.empty(len(database), dtype=np.uint8)
    for first in range(0, len(database), BRUTE_FORCE_CHUNK):
        chunk = database[first : first + BRUTE_FORCE_CHUNK]
        distances[first : first + len(chunk)] = np.bitwise_count(chunk ^ query).sum(axis=1, dtype=np.uint8)
    return distances


def exactness(index: HammingIndex, database: np.ndarray, queries: np.ndarray, k: int) -> dict:
    """Whether each strategy's k-NN and balls equal brute force (ids sorted by distance, then id)."""
    same = {f"knn {s}": True for s in ("auto", "probe", "scan")}
    same |= {f"ball r<={r} {s}": True for r in BALL_RADII for s in ("auto", "probe", "scan")}
    kth = []
    for query in queries:
        distances = brute_force(database, query)
        near = np.flatnonzero(distances <= np.partition(distances, k - 1)[k - 1])
        near = near[np.lexsort((near, distances[near]))]
        kth.append(int(distances[near[k - 1]]))
        for strategy in ("auto", "probe", "scan"):
            found_d, found_ids = index.search(query[None], k=k, strategy=strategy)
            same[f"knn {strategy}"] &= np.array_equal(found_ids[0], near[:k]) and np.array_equal(
                found_d[0], distances[near[:k]]
            )
            for radius in BALL_RADII:
                inside = near_within(distances, radius)
                (ball_d, ball_ids), = index.range_search(query[None], radius=radius, strategy=strategy)
                same[f"ball r<={radius} {strategy}"] &= np.array_equal(ball_ids, inside) and np.array_equal(
                    ball_d, distances[inside]
                )
    return {"identical_to_brute_force": same, "kth_distance_percentiles_0_50_90_100": np.percentile(kth, [0, 50, 90, 100]).tolist()}


def near_within(distances: np.ndarray, radius: int) -> np.ndarray:
    inside = np.flatnonzero(distances <= radius)
    return inside[np.lexsort((inside, distances[inside]))]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def bench_bits(args: argparse.Namespace, nbits: int) -> dict:
    """Every measurement for one code length (run in a fresh process)."""
    faiss.omp_set_num_threads(1)
    database, queries = clustered_codes(args, nbits)
    rss_codes = peak_rss_mb()
    start = time.perf_counter()
    index = HammingIndex(nbits)
    index.add(database, np.arange(args.n, dtype=np.int64))
    index.search(queries[:1], k=args.k)  # builds the hash tables and measures the cost model
    build_s = time.perf_counter() - start
    rss_index = peak_rss_mb()

    k = args.k
    probing = {
        "auto": lambda q: index.search(q, k=k),
        "probe": lambda q: index.search(q, k=k, strategy="probe"),
    }
    probe_us, _ = time_in_turns(probing, queries)
    balls = {f"ball r<={r}": (lambda q, r=r: index.range_search(q, radius=r)) for r in BALL_RADII}
    ball_us, _ = time_in_turns(balls, queries)

    flat = faiss.IndexBinaryFlat(nbits)
    flat.add(database)
    scanning = {
        "FAISS IndexBinaryFlat": lambda q: flat.search(q, k),
        "scan": lambda q: index.search(q, k=k, strategy="scan"),
    }
    scan_us, _ = time_in_turns(scanning, queries[: args.scan_queries])
    del flat
    if args.faiss_hash:
        ball_us |= faiss_hash_balls(database, queries, nbits)
    checked = exactness(index, database, queries[: args.exact_queries], k)

    best = min(probe_us["probe"], scan_us["scan"])
    return {
        "bits": nbits,
        "n": args.n,
        "substrings": index.substrings,
        "build_seconds": round(build_s, 2),
        "index_bytes_per_code": round(index.nbytes / args.n, 2),
        "codes_bytes_per_code": nbits // 8,
        "peak_rss_mb": {"codes generated": round(rss_codes), "index built": round(rss_index), "end": round(peak_rss_mb())},
        "median_us": probe_us | scan_us | ball_us,
        "auto_over_faster_forced": round(probe_us["auto"] / best, 3),
        "flat_over_auto": round(scan_us["FAISS IndexBinaryFlat"] / probe_us["auto"], 1),
        "scan_queries": min(args.scan_queries, args.queries),
        "exact_queries": min(args.exact_queries, args.queries),
        **checked,
    }


def faiss_hash_balls(database: np.ndarray, queries: np.ndarray, nbits: int) -> dict[str, float]:
    """FAISS IndexBinaryHash balls (one table over all bits, nflip = radius), for comparison."""
    table = faiss.IndexBinaryHash(nbits, nbits)
    table.add(database)
    medians = {}
    for radius in BALL_RADII:
        table.nflip = radius
        name = f"FAISS IndexBinaryHash ball r<={radius}"
        medians |= time_in_turns({name: lambda q: table.range_search(q, radius + 1)}, queries)[0]
    return medians


def print_report(result: dict) -> None:
    bits, us = result["bits"], result["median_us"]
    flat = us["FAISS IndexBinaryFlat"]
    print(f"\n## {result['n']:,} codes of {bits} bits ({result['substrings']} tables)\n")
    print("| answer | median us | vs FAISS flat |")
    print("|---|---|---|")
    for name, median in us.items():
        ratio = f"{flat / median:.1f}x" if not name.startswith(("ball", "FAISS IndexBinaryHash")) else "-"
        print(f"| {name} | {median:,.1f} | {ratio} |")
    print(
        f"\nauto / faster forced: {result['auto_over_faster_forced']:.3f}; index {result['index_bytes_per_code']} "
        f"bytes per code ({result['codes_bytes_per_code']} of them the codes); build {result['build_seconds']} s; "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    print(f"identical to brute force on {result['exact_queries']} queries: {result['identical_to_brute_force']}")
    print(f"k-th distance percentiles 0/50/90/100: {result['kth_distance_percentiles_0_50_90_100']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="database codes")
    parser.add_argument("--queries", type=int, default=200, help="queries, answered one at a time")
    parser.add_argument("--scan-queries", type=int, default=200,
                        help="how many of the queries the exhaustive answerers (FAISS flat, forced scan) answer")
    parser.add_argument("--exact-queries", type=int, default=50, help="queries checked against brute force")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64], help="code lengths")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--dim", type=int, default=64, help="dimension of the clustered data")
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters")
    parser.add_argument("--spread", type=float, default=0.5, help="cluster std (centres ~ N(0, I))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faiss-hash", action="store_true", help="also time FAISS IndexBinaryHash balls")
    parser.add_argument("--json", help="write the settings and results to this file")
    args = parser.parse_args()

    results = []
    for nbits in args.bits:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
            results.append(child.submit(bench_bits, args, nbits).result())
        print_report(results[-1])
    if args.json:
        report = {
            "settings": vars(args),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "machine": platform.processor() or platform.machine(),
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
