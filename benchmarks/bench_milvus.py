"""Query latency and exactness of the Milvus backend (Milvus Lite) against the local backend, on the
same codes and latents, through the read view each store hands out (what the search module calls).

Codes are signs of random projections of a Gaussian mixture (clustered, so Hamming ties are common);
latents are the mixture points' first coordinates. Queries are fresh draws from the same mixture.
Both stores get the same items in the same order (so the same ids). Timing: one query per call,
the two backends taking turns by blocks of queries so that load from other processes falls on both
alike; then every query in one call (per-query time of the batch). Exactness: every answer is
checked against a brute-force numpy sort by (distance, id): Hamming k-NN and range exactly, latent
k-NN ids exactly and distances to 1e-5.

The local backend answers in this process (one FAISS/OpenMP thread with OMP_NUM_THREADS=1); Milvus
Lite answers in its own server process over a Unix socket, so each of its queries pays a gRPC round
trip and the server may use more than one core.

    OMP_NUM_THREADS=1 python benchmarks/bench_milvus.py --n 100000 --bits 64 --k 10 --json benchmarks/results/milvus-100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashae.codes import hamming_distances
from hashae.index.backends import open_store
from hashae.index.backends.base import NewItem, ReadView
from hashae.index.backends.milvus import MilvusStore
from hashae.index.settings import StoreSettings

ADD_BATCH = 10_000
BLOCK = 10  # queries per turn


def clustered_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes (n, bits/8), latents (n, latent_dim), query codes, query latents)."""
    rng = np.random.default_rng(args.seed)
    dim = max(64, args.latent_dim)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
    projection = rng.standard_normal((dim, args.bits), dtype=np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        points = centres[rng.integers(0, args.clusters, count)]
        points += args.spread * rng.standard_normal((count, dim), dtype=np.float32)
        return np.packbits(points @ projection > 0, axis=-1), np.ascontiguousarray(points[:, : args.latent_dim])

    codes, latents = draw(args.n)
    query_codes, query_latents = draw(args.queries)
    return codes, latents, query_codes, query_latents


def build(store, settings: StoreSettings, codes: np.ndarray, latents: np.ndarray) -> float:
    """Fill and commit a store; returns the seconds it took."""
    started = time.perf_counter()
    with store.writer() as writer:
        writer.set_settings(settings)
        models = writer.add_models(hashing={"dir": "models/hashing", "kind": "hashing"}, latent={"dir": "models/latent", "kind": "vae"})
        for first in range(0, len(codes), ADD_BATCH):
            rows = [NewItem(f"img{i:08d}.png", 1, 1, f"{i:064x}") for i in range(first, min(first + ADD_BATCH, len(codes)))]
            writer.add_items(rows, codes[first : first + len(rows)], latents[first : first + len(rows)])
        writer.commit(models=models)
    return time.perf_counter() - started


def timed_turns(views: dict[str, ReadView], ask: Callable[[ReadView, int], object], n_queries: int) -> dict[str, list[float]]:
    """Per-query seconds of each backend, one query per call, taking turns by blocks (alternating order)."""
    times: dict[str, list[float]] = {name: [] for name in views}
    names = list(views)
    for block, first in enumerate(range(0, n_queries, BLOCK)):
        for name in names if block % 2 == 0 else reversed(names):
            for q in range(first, min(first + BLOCK, n_queries)):
                started = time.perf_counter()
                ask(views[name], q)
                times[name].append(time.perf_counter() - started)
    return times


def batch_seconds(view: ReadView, ask_all: Callable[[ReadView], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        ask_all(view)
        best = min(best, time.perf_counter() - started)
    return best


def exact_hamming(view: ReadView, queries: np.ndarray, truth: np.ndarray, ids: np.ndarray, *, k: int, radius: int) -> bool:
    order = [np.lexsort((ids, d)) for d in truth]
    knn = view.search_hamming(queries, k=k)
    ball = view.range_hamming(queries, radius=radius)
    for q, distances in enumerate(truth):
        want = [(int(ids[i]), int(distances[i])) for i in order[q]]
        if [(h.id, h.distance) for h in knn[q]] != want[:k]:
            return False
        if [(h.id, h.distance) for h in ball[q]] != [pair for pair in want if pair[1] <= radius]:
            return False
    return True


def exact_latent(view: ReadView, queries: np.ndarray, latents: np.ndarray, ids: np.ndarray, *, k: int) -> bool:
    for q, hits in enumerate(view.search_latent(queries, k=k)):
        distances = ((latents.astype(np.float64) - queries[q]) ** 2).sum(1)
        order = np.lexsort((ids, distances))[:k]
        if [h.id for h in hits] != ids[order].tolist():
            return False
        if not np.allclose([h.distance for h in hits], distances[order], rtol=1e-5, atol=1e-6):
            return False
    return True


def summary(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e6
    return {"median_us": round(float(np.median(values)), 1), "p90_us": round(float(np.percentile(values, 90)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--radius", type=int, default=4, help="radius of the Hamming range searches")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--spread", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    codes, latents, query_codes, query_latents = clustered_data(args)
    settings = {
        "local": StoreSettings(bits=args.bits, latent_dim=args.latent_dim),
        "milvus": StoreSettings(bits=args.bits, latent_dim=args.latent_dim, backend="milvus"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as folder:
        stores = {
            "local": open_store(Path(folder) / "local", create=True),
            "milvus": MilvusStore.open(Path(folder) / "milvus", create=True),
        }
        build_s = {name: round(build(store, settings[name], codes, latents), 2) for name, store in stores.items()}
        views = {name: store.snapshot() for name, store in stores.items()}
        ids = views["local"].item_ids()
        assert np.array_equal(ids, views["milvus"].item_ids()), "the two stores gave the items different ids"
        asks = {
            f"hamming {args.k}-NN": (lambda v, q: v.search_hamming(query_codes[q : q + 1], k=args.k),
                                     lambda v: v.search_hamming(query_codes, k=args.k)),
            f"hamming range r={args.radius}": (lambda v, q: v.range_hamming(query_codes[q : q + 1], radius=args.radius),
                                               lambda v: v.range_hamming(query_codes, radius=args.radius)),
            f"latent {args.k}-NN": (lambda v, q: v.search_latent(query_latents[q : q + 1], k=args.k),
                                    lambda v: v.search_latent(query_latents, k=args.k)),
        }
        for one, _ in asks.values():  # warm up both (compiled kernels, Milvus segments)
            timed_turns(views, one, min(BLOCK, args.queries))
        results = {}
        for what, (one, all_at_once) in asks.items():
            turns = timed_turns(views, one, args.queries)
            row = {name: summary(times) for name, times in turns.items()}
            for name, view in views.items():
                row[name]["batch_per_query_us"] = round(batch_seconds(view, all_at_once) / args.queries * 1e6, 1)
            row["milvus_over_local_median"] = round(row["milvus"]["median_us"] / row["local"]["median_us"], 1)
            results[what] = row
        truth = hamming_distances(query_codes, codes)
        exactness = {
            name: {"hamming": exact_hamming(view, query_codes, truth, ids, k=args.k, radius=args.radius),
                   "latent": exact_latent(view, query_latents, latents, ids, k=args.k)}
            for name, view in views.items()
        }
        ball_sizes = [len(hits) for hits in views["local"].range_hamming(query_codes, radius=args.radius)]
        for store in stores.values():
            store.close()

    report = {
        "n": args.n, "bits": args.bits, "latent_dim": args.latent_dim, "k": args.k, "radius": args.radius,
        "queries": args.queries, "mean_range_hits": round(float(np.mean(ball_sizes)), 1),
        "build_seconds": build_s, "latency": results, "exact": exactness,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    print(f"{args.n:,} codes of {args.bits} bits, {args.queries} queries, one per call (median / p90 us), "
          f"and all in one call (per query):")
    for what, row in results.items():
        cells = [f"{name} {row[name]['median_us']:>8.1f} / {row[name]['p90_us']:>8.1f}  batch {row[name]['batch_per_query_us']:>7.1f}"
                 for name in views]
        print(f"  {what:<22} {' | '.join(cells)} | milvus/local {row['milvus_over_local_median']}x")
    print(f"  build (add + commit), s: {build_s}; exact vs brute force: {exactness}; "
          f"range hits per query: {report['mean_range_hits']}; load average {report['machine']['load_average_before_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
