"""Speed columns: microseconds per query, one query at a time on one thread (median), by look-up
through the search module (the path `hashae query` and the server take) and by exhaustive scan
(FAISS IndexBinaryFlat / IndexFlatL2), and per query when all are batched."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from hashae.index.backends.base import ReadView
from hashae.index.search import search

TIMING_K = 10


def median_us(run_one: Callable[[int], Any], n: int) -> float:
    """Median wall time of run_one(i) for i < n, in microseconds."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        run_one(i)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def batched_us(run_all: Callable[[], Any], n: int) -> float:
    """Wall time of run_all() per query, in microseconds."""
    started = time.perf_counter()
    run_all()
    return round((time.perf_counter() - started) / n * 1e6, 2)


def binary_timings(view: ReadView, q_codes: np.ndarray, db_codes: np.ndarray, n: int) -> dict[str, float]:
    """Hamming 10-NN of codes: by look-up through the search module (ties by id: codes alone, as a
    hash function without a latent is searched), by FAISS scan, and batched."""
    import faiss

    n = min(n, len(q_codes))
    no_latents = np.zeros((len(q_codes), view.settings.latent_dim), np.float32)

    def lookup(i: int) -> None:
        search(view, codes=q_codes[i : i + 1], latents=no_latents[i : i + 1], mode="hamming", k=TIMING_K, ties="id")

    flat = faiss.IndexBinaryFlat(db_codes.shape[1] * 8)
    flat.add(db_codes)
    lookup(0)  # warm-up (JIT, caches)
    return {
        "lookup_us": median_us(lookup, n),
        "scan_us": median_us(lambda i: flat.search(q_codes[i : i + 1], TIMING_K), n),
        "batch_us": batched_us(lambda: flat.search(q_codes, TIMING_K), len(q_codes)),
    }


def float_timings(q_vectors: np.ndarray, db_vectors: np.ndarray, n: int) -> dict[str, float | None]:
    """Exhaustive L2 10-NN of float vectors (FAISS IndexFlatL2), one at a time and batched."""
    import faiss

    n = min(n, len(q_vectors))
    flat = faiss.IndexFlatL2(db_vectors.shape[1])
    flat.add(np.ascontiguousarray(db_vectors, dtype=np.float32))
    queries = np.ascontiguousarray(q_vectors, dtype=np.float32)
    return {
        "lookup_us": None,
        "scan_us": median_us(lambda i: flat.search(queries[i : i + 1], TIMING_K), n),
        "batch_us": batched_us(lambda: flat.search(queries, TIMING_K), len(queries)),
    }


def hybrid_timings(view: ReadView, q_codes: np.ndarray, q_latents: np.ndarray, n: int) -> dict[str, float | None]:
    """One hybrid 10-NN query through the search module: the Hamming shortlist by look-up, then
    the exact latent re-rank."""
    n = min(n, len(q_codes))

    def one(i: int) -> None:
        search(view, codes=q_codes[i : i + 1], latents=q_latents[i : i + 1], mode="hybrid", k=TIMING_K)

    one(0)
    return {"lookup_us": median_us(one, n), "scan_us": None, "batch_us": None}
