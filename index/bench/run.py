"""`hashae bench`: every method measured in one process on one split (see protocol.py).

Rows: binary codes (lsh, pcah, itq via FAISS; the hashing autoencoder; the other seed variants'
code layers thresholded at their training medians), float vectors (the VAE mean, raw pixels), and
hybrid: the product's hybrid mode, answered by index/search.py over the database's codes and VAE
means (the hamming answer at depth max(k, HYBRID_SHORTLIST) re-ranked by VAE-mean distance), each
metric from the answer a user asking that many results gets: recall@10 from k=10, R10@100 from
k=100, mAP@1000 from k=1000 (heads of one ranking, as the shortlist is the same for every k up to
1000; mAP@all ranks the rest of the database after the k=1000 answer, in Hamming order).
Every autoencoder is trained as `hashae index` trains it and encoded by the numpy encoder of its
saved checkpoint, as the product encodes. Binary rows rank by (Hamming distance, id): the codes'
own quality, comparable across hash functions (`hashae query --ties id`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hashae import metrics
from hashae.baselines import METHODS as BASELINES
from hashae.baselines import fit_hash
from hashae.events import Reporter, message
from hashae.index.array_view import ArrayView
from hashae.index.backends.base import ReadView
from hashae.index.bench.encoders import TrainedEncoder, train_encoder
from hashae.index.bench.protocol import RECIPES, VARIANTS, BenchOptions, Split, flat, load_split
from hashae.index.bench.timing import binary_timings, float_timings, hybrid_timings
from hashae.index.search import search

RANKING_CHUNK = 500  # queries per full-ranking block: (chunk, n) int64


@dataclass
class BenchResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def run_bench(
    options: BenchOptions,
    *,
    report: Reporter | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> BenchResult:
    """Measure every asked method at every asked bit length; rows in a fixed order.

    report: progress and messages (training, encoding); on_row: called with each row as it is done.
    """
    import faiss

    split = load_split(options)
    db_x, q_x = flat(split.db.x), flat(split.queries.x)
    truth = metrics.exact_neighbours(q_x, db_x)
    result = BenchResult(info={"data": split.name, "database": len(db_x), "queries": len(q_x), "dim": db_x.shape[1]})
    message(report, f"{split.name}: {len(db_x)} database items, {len(q_x)} queries")
    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="hashae-bench-") as folder:
        bench = _Bench(options, split, truth, result, report=report, on_row=on_row, folder=Path(folder))
        for bits in options.bits:
            for method in options.methods:
                if method in BASELINES:
                    bench.baseline(method, bits)
                elif method == "hashing" or method in VARIANTS or method in RECIPES:
                    bench.autoencoder(method, bits)
            if "hybrid" in options.methods:
                bench.hybrid(bits)
        if "vae" in options.methods:
            bench.float_row("vae", *bench.vae_latents(), train_s=bench.vae.train_s)
        if "pixels" in options.methods:
            bench.float_row("pixels", q_x, db_x, train_s=0.0)
    return result


def database_view(codes: np.ndarray, latents: np.ndarray | None = None) -> ReadView:
    """The database's codes (and latents) as a ReadView whose ids are the database indexes."""
    return ArrayView(codes, latents)


class _Bench:
    """Shared state of one bench run: the split, the truth, the trained models, the rows."""

    def __init__(self, options: BenchOptions, split: Split, truth, result: BenchResult, *, report, on_row, folder: Path) -> None:
        self.options, self.split, self.truth, self.result = options, split, truth, result
        self.report, self.on_row, self.folder = report, on_row, folder
        self.hashing_codes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.vae: TrainedEncoder | None = None
        self._vae_latents: tuple[np.ndarray, np.ndarray] | None = None

    # ---------------------------------------------------------------------- representations
    def baseline(self, method: str, bits: int) -> None:
        started = time.perf_counter()
        function = fit_hash(method, flat(self.split.db.x), nbits=bits, seed=self.options.seed)
        train_s = time.perf_counter() - started
        self.binary_row(method, bits, function.encode(flat(self.split.queries.x)), function.encode(flat(self.split.db.x)), train_s)

    def autoencoder(self, kind: str, bits: int) -> None:
        trained = self._train(kind, bits)
        q_codes, db_codes = trained.codes(self.split.queries.x), trained.codes(self.split.db.x)
        if kind == "hashing":
            self.hashing_codes[bits] = (q_codes, db_codes)
        stats = trained.code_stats or {}
        model_stats = {key: stats.get(key) for key in ("saturated_share", "noise_flip_share")}
        self.binary_row(kind, bits, q_codes, db_codes, trained.train_s, model_stats=model_stats)

    def vae_latents(self) -> tuple[np.ndarray, np.ndarray]:
        """The VAE means of the queries and the database (the VAE trained once, on first use)."""
        if self._vae_latents is None:
            self.vae = self._train("vae", self.options.latent_dim)
            self._vae_latents = self.vae.latents(self.split.queries.x), self.vae.latents(self.split.db.x)
        return self._vae_latents

    def _train(self, kind: str, code_size: int) -> TrainedEncoder:
        options = self.options
        return train_encoder(
            kind, self.split.db.x, code_size=code_size, folder=self.folder,
            epochs=options.epochs, quality=options.quality, seed=options.seed, report=self.report,
        )

    # ------------------------------------------------------------------------------ rows
    def binary_row(self, method: str, bits: int, q_codes: np.ndarray, db_codes: np.ndarray, train_s: float,
                   *, model_stats: dict[str, Any] | None = None) -> None:
        """model_stats: the training run's saturation and noise flip shares (autoencoders only)."""
        labels = self.split.queries.labels, self.split.db.labels
        row = metrics.evaluate_binary(q_codes, db_codes, *labels, truth=self.truth)
        row.update({"saturated_share": None, "noise_flip_share": None, **(model_stats or {}), **bit_usage(db_codes)})
        row.update(binary_timings(database_view(db_codes), q_codes, db_codes, self.options.timing_queries))
        self._add(method, bits, bits // 8, row, train_s)
        if bits == 32 or len(self.options.bits) == 1:
            curve = metrics.precision_recall_curve(q_codes, db_codes, *labels)
            self.result.pr_curves[f"{method}@{bits}"] = {"precision": curve.precision.tolist(), "recall": curve.recall.tolist()}

    def float_row(self, method: str, q_vectors: np.ndarray, db_vectors: np.ndarray, *, train_s: float) -> None:
        labels = self.split.queries.labels, self.split.db.labels
        row = metrics.evaluate_float(q_vectors, db_vectors, *labels, truth=self.truth)
        row.update(float_timings(q_vectors, db_vectors, self.options.timing_queries))
        self._add(method, 32 * db_vectors.shape[1], 4 * db_vectors.shape[1], row, train_s)

    def hybrid(self, bits: int) -> None:
        """The product's hybrid mode: answers of index/search.py at the depth mAP@1000 looks at."""
        if bits not in self.hashing_codes:
            self.autoencoder("hashing", bits)
        (q_codes, db_codes), (q_lat, db_lat) = self.hashing_codes[bits], self.vae_latents()
        view = database_view(db_codes, db_lat)
        message(self.report, f"hybrid ({bits}): {len(q_codes)} queries through the search module")

        def answer_ids(k: int) -> np.ndarray:
            answers = search(view, codes=q_codes, latents=q_lat, mode="hybrid", k=min(k, len(db_codes)))
            return np.stack([found.ids for found in answers])  # (nq, k) int64

        ap_at_depth, ap_all = self._average_precisions(answer_ids(metrics.MAP_DEPTH), q_codes, db_codes)
        row = {
            "map_at_1000": float(ap_at_depth.mean()),
            "map_all": float(ap_all.mean()),
            "p_at_r2": None,
            "empty_ball_share": None,
            "recall_at_10": self.truth.recall(answer_ids(metrics.RECALL_K)),
            "r10_at_100": self.truth.recall(answer_ids(metrics.RECALL_DEPTH)),
            **hybrid_timings(view, q_codes, q_lat, self.options.timing_queries),
        }
        hashing_train = next(r["train_s"] for r in self.result.rows if r["method"] == "hashing" and r["bits"] == bits)
        self._add("hybrid", bits, bits // 8 + 4 * db_lat.shape[1], row, hashing_train + self.vae.train_s)

    def _average_precisions(self, top: np.ndarray, q_codes: np.ndarray, db_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AP@1000 of the answers, and AP of the whole database ranked as the answer followed by
        every other item in Hamming order (ties by id)."""
        q_labels, db_labels = self.split.queries.labels, self.split.db.labels
        ap_at_depth, ap_all = np.empty(len(top)), np.empty(len(top))
        for start in range(0, len(top), RANKING_CHUNK):
            rows = slice(start, start + RANKING_CHUNK)
            ranking = _answer_then_hamming(top[rows], metrics.hamming_ranking(q_codes[rows], db_codes))
            relevant = db_labels[ranking] == q_labels[rows, None]
            ap_at_depth[rows] = metrics.average_precisions(relevant, k=metrics.MAP_DEPTH)
            ap_all[rows] = metrics.average_precisions(relevant)
        return ap_at_depth, ap_all

    def _add(self, method: str, bits: int, nbytes: int, measured: dict[str, Any], train_s: float) -> None:
        row = {"method": method, "bits": bits, "bytes_per_item": nbytes, **measured, "train_s": round(train_s, 2)}
        self.result.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)


def bit_usage(codes: np.ndarray) -> dict[str, float]:
    """Bit balance (std over bits of each bit's mean) and mean bit entropy (bits) of packed codes."""
    from hashae.codes import unpack_bits

    p = unpack_bits(codes).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.nan_to_num(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    return {"bit_balance_std": round(float(p.std()), 4), "mean_bit_entropy": round(float(entropy.mean()), 4)}


def _answer_then_hamming(top: np.ndarray, hamming_ranking: np.ndarray) -> np.ndarray:
    """Full rankings (nq, n): each answer (nq, depth), then the items it lacks in Hamming order."""
    answered = np.zeros(hamming_ranking.shape, dtype=bool)  # indexed by database id
    np.put_along_axis(answered, top, True, axis=1)
    rest_mask = ~np.take_along_axis(answered, hamming_ranking, axis=1)
    rest = hamming_ranking[rest_mask].reshape(len(top), -1)
    return np.concatenate([top, rest], axis=1)
