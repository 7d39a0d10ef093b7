"""`hashae bench`: every method measured in one process on one split, by the protocol of BENCHMARK.md.

Split: Fashion-MNIST's 60,000 train images are the database and training set; the queries are test
images numpy.random.default_rng(0).choice(10000, n_queries, replace=False). For a labelled folder,
rng(0) holds out the queries and the rest is the database. Models and hash functions are fitted on
the database only, never on the queries.

Rows: binary codes (lsh, pcah, itq via FAISS; the hashing autoencoder; the other seed variants'
code layers thresholded at their training medians), float vectors (the VAE mean, raw pixels), and
hybrid (the hashing codes' Hamming top-1000 re-ranked by VAE-mean distance). Speed: microseconds
per query, one query at a time on one thread (median), by hash look-up (our HammingIndex, exact
10-NN) and by exhaustive scan (FAISS IndexBinaryFlat / IndexFlatL2), and per query when batched.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hashae import metrics
from hashae.baselines import METHODS as BASELINES
from hashae.baselines import fit_hash
from hashae.data import ArrayDataset, load_fashion_mnist, load_source
from hashae.errors import ConfigError, DataError
from hashae.index.backends.local.hamming import HammingIndex

VARIANTS = ("linear", "undercomplete", "sparse", "denoising", "contractive")
FLOATS = ("vae", "pixels")
ALL_METHODS = (*BASELINES, "hashing", "hybrid", *VARIANTS, *FLOATS)
HYBRID_SHORTLIST = metrics.MAP_DEPTH  # re-rank the Hamming top 1000 (the depth mAP@1000 looks at)
TIMING_K = 10
HYBRID_CHUNK = 500


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. source: "fashion-mnist" or a folder with class subfolders."""

    source: str = "fashion-mnist"
    bits: tuple[int, ...] = (16, 32, 64)
    methods: tuple[str, ...] = ALL_METHODS
    queries: int = 1000
    db_limit: int | None = None
    epochs: int | None = None
    quality: str = "fast"
    latent_dim: int = 32
    image_size: int = 28
    timing_queries: int = 200
    seed: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown:
            raise ConfigError(f"unknown methods {', '.join(unknown)}; known: {', '.join(ALL_METHODS)}")
        if any(b % 8 or b <= 0 for b in self.bits):
            raise ConfigError(f"bits must be positive multiples of 8, got {self.bits}")


@dataclass
class Split:
    """The database (training set) and the held-out queries, both labelled."""

    db: ArrayDataset
    queries: ArrayDataset
    name: str


@dataclass
class BenchResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def load_split(options: BenchOptions) -> Split:
    """The protocol's split of Fashion-MNIST, or a seeded query hold-out of a labelled folder."""
    rng = np.random.default_rng(0)
    if options.source == "fashion-mnist":
        db, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        if options.queries > len(test):
            raise ConfigError(f"Fashion-MNIST has {len(test)} test images, asked for {options.queries} queries")
        queries = test.subset(rng.choice(len(test), options.queries, replace=False))
        name = "Fashion-MNIST (train = database, test = queries)"
    else:
        data = load_source(options.source, size=options.image_size)
        if (data.labels < 0).any():
            raise DataError(f"{options.source}: the bench needs labels (images in class subfolders)")
        n_queries = min(options.queries, len(data) // 5)
        order = rng.permutation(len(data))
        queries, db = data.subset(np.sort(order[:n_queries])), data.subset(np.sort(order[n_queries:]))
        name = f"{options.source} ({len(db)} database, {n_queries} held-out queries)"
    if options.db_limit:
        db = db.subset(slice(0, options.db_limit))
    return Split(db=db, queries=queries, name=name)


def run_bench(options: BenchOptions, *, log: Callable[[str], None] = lambda line: None) -> BenchResult:
    """Measure every asked method at every asked bit length; rows in a fixed order."""
    import faiss

    split = load_split(options)
    db_x, q_x = _flat(split.db.x), _flat(split.queries.x)
    truth = metrics.exact_neighbours(q_x, db_x)
    result = BenchResult(info={"data": split.name, "database": len(db_x), "queries": len(q_x), "dim": db_x.shape[1]})
    log(f"{split.name}: {len(db_x)} database items, {len(q_x)} queries")
    faiss.omp_set_num_threads(1)
    bench = _Bench(options, split, truth, result, log)
    latents = bench.vae_latents() if {"vae", "hybrid"} & set(options.methods) else None
    for bits in options.bits:
        for method in options.methods:
            if method in BASELINES:
                bench.baseline(method, bits)
            elif method == "hashing" or method in VARIANTS:
                bench.autoencoder(method, bits)
        if "hybrid" in options.methods:
            bench.hybrid(bits, latents)
    if "vae" in options.methods:
        bench.float_row("vae", *latents, train_s=bench.vae_seconds)
    if "pixels" in options.methods:
        bench.float_row("pixels", q_x, db_x, train_s=0.0)
    return result


class _Bench:
    """Shared state of one bench run: the split, the truth, the trained models, the rows."""

    def __init__(self, options, split: Split, truth, result: BenchResult, log) -> None:
        self.options, self.split, self.truth, self.result, self.log = options, split, truth, result, log
        self.hashing_codes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.vae_seconds = 0.0

    # ---------------------------------------------------------------------- representations
    def baseline(self, method: str, bits: int) -> None:
        started = time.perf_counter()
        function = fit_hash(method, _flat(self.split.db.x), nbits=bits, seed=self.options.seed)
        train_s = time.perf_counter() - started
        self.binary_row(method, bits, function.encode(_flat(self.split.queries.x)), function.encode(_flat(self.split.db.x)), train_s)

    def autoencoder(self, kind: str, bits: int) -> None:
        fitted = self._fit(kind, bits)
        q_codes, db_codes = (_model_codes(fitted.model, d.x) for d in (self.split.queries, self.split.db))
        if kind == "hashing":
            self.hashing_codes[bits] = (q_codes, db_codes)
        self.binary_row(kind, bits, q_codes, db_codes, fitted.history.seconds)

    def vae_latents(self) -> tuple[np.ndarray, np.ndarray]:
        fitted = self._fit("vae", self.options.latent_dim)
        self.vae_seconds = fitted.history.seconds
        return tuple(_model_embeddings(fitted.model, d.x) for d in (self.split.queries, self.split.db))

    def _fit(self, kind: str, code_size: int):
        from hashae.recipes import fit_default

        self.log(f"training {kind} ({code_size}) on {len(self.split.db.x)} items")
        return fit_default(
            kind,
            self.split.db.x,
            code_size=code_size,
            epochs=self.options.epochs,
            quality=self.options.quality,
            seed=self.options.seed,
            show_progress=self.options.show_progress,
        )

    # ------------------------------------------------------------------------------ rows
    def binary_row(self, method: str, bits: int, q_codes: np.ndarray, db_codes: np.ndarray, train_s: float) -> None:
        labels = self.split.queries.labels, self.split.db.labels
        row = metrics.evaluate_binary(q_codes, db_codes, *labels, truth=self.truth)
        row.update(_binary_timings(q_codes, db_codes, self.options.timing_queries))
        self._add(method, bits, bits // 8, row, train_s)
        if bits == 32 or len(self.options.bits) == 1:
            curve = metrics.precision_recall_curve(q_codes, db_codes, *labels)
            self.result.pr_curves[f"{method}@{bits}"] = {"precision": curve.precision.tolist(), "recall": curve.recall.tolist()}

    def float_row(self, method: str, q_vectors: np.ndarray, db_vectors: np.ndarray, *, train_s: float) -> None:
        labels = self.split.queries.labels, self.split.db.labels
        row = metrics.evaluate_float(q_vectors, db_vectors, *labels, truth=self.truth)
        row.update(_float_timings(q_vectors, db_vectors, self.options.timing_queries))
        self._add(method, 32 * db_vectors.shape[1], 4 * db_vectors.shape[1], row, train_s)

    def hybrid(self, bits: int, latents: tuple[np.ndarray, np.ndarray]) -> None:
        if bits not in self.hashing_codes:
            self.autoencoder("hashing", bits)
        (q_codes, db_codes), (q_lat, db_lat) = self.hashing_codes[bits], latents
        n_queries = len(q_codes)
        ap_at_depth, ap_all = np.empty(n_queries), np.empty(n_queries)
        top = np.empty((n_queries, min(metrics.RECALL_DEPTH, len(db_codes))), np.int64)
        for start in range(0, n_queries, HYBRID_CHUNK):  # a full ranking is (chunk, n) int64
            rows = slice(start, start + HYBRID_CHUNK)
            ranking = _hybrid_ranking(q_codes[rows], db_codes, q_lat[rows], db_lat)
            relevant = self.split.db.labels[ranking] == self.split.queries.labels[rows, None]
            ap_at_depth[rows] = metrics.average_precisions(relevant, k=metrics.MAP_DEPTH)
            ap_all[rows] = metrics.average_precisions(relevant)
            top[rows] = ranking[:, : top.shape[1]]
        row = {
            "map_at_1000": float(ap_at_depth.mean()),
            "map_all": float(ap_all.mean()),
            "p_at_r2": None,
            "empty_ball_share": None,
            "recall_at_10": self.truth.recall(top[:, : metrics.RECALL_K]),
            "r10_at_100": self.truth.recall(top),
            **_hybrid_timings(q_codes, db_codes, q_lat, db_lat, self.options.timing_queries),
        }
        hashing_train = next(r["train_s"] for r in self.result.rows if r["method"] == "hashing" and r["bits"] == bits)
        self._add("hybrid", bits, bits // 8 + 4 * db_lat.shape[1], row, hashing_train + self.vae_seconds)

    def _add(self, method: str, bits: int, nbytes: int, measured: dict[str, Any], train_s: float) -> None:
        row = {"method": method, "bits": bits, "bytes_per_item": nbytes, **measured, "train_s": round(train_s, 2)}
        self.result.rows.append(row)
        self.log(format_row(row))


def _hybrid_ranking(q_codes, db_codes, q_lat, db_lat) -> np.ndarray:
    """Full Hamming ranking whose first HYBRID_SHORTLIST ids are re-ranked by latent distance."""
    ranking = metrics.hamming_ranking(q_codes, db_codes)
    short = ranking[:, :HYBRID_SHORTLIST]
    dists = ((db_lat[short] - q_lat[:, None, :]) ** 2).sum(-1)  # (nq, shortlist)
    ranking[:, :HYBRID_SHORTLIST] = np.take_along_axis(short, np.lexsort((short, dists), axis=1), axis=1)
    return ranking


# --------------------------------------------------------------------------------- encoding
def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def _model_codes(model, x: np.ndarray) -> np.ndarray:
    import torch

    from hashae.codes import pack_bits

    with torch.no_grad():
        bits = torch.cat([model.bits(chunk) for chunk in torch.from_numpy(x).split(4096)])
    return pack_bits(bits.numpy())


def _model_embeddings(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([model.embed(chunk) for chunk in torch.from_numpy(x).split(4096)]).numpy()


# ---------------------------------------------------------------------------------- timing
def _median_us(run_one: Callable[[int], Any], n: int) -> float:
    times = []
    for i in range(n):
        started = time.perf_counter()
        run_one(i)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def _batched_us(run_all: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    run_all()
    return round((time.perf_counter() - started) / n * 1e6, 2)


def _binary_timings(q_codes: np.ndarray, db_codes: np.ndarray, n: int) -> dict[str, float]:
    import faiss

    n = min(n, len(q_codes))
    index = HammingIndex(db_codes.shape[1] * 8)
    index.add(db_codes, np.arange(len(db_codes), dtype=np.int64))
    flat = faiss.IndexBinaryFlat(db_codes.shape[1] * 8)
    flat.add(db_codes)
    index.search(q_codes[:1], k=TIMING_K)  # warm-up (JIT, caches)
    return {
        "lookup_us": _median_us(lambda i: index.search(q_codes[i : i + 1], k=TIMING_K), n),
        "scan_us": _median_us(lambda i: flat.search(q_codes[i : i + 1], TIMING_K), n),
        "batch_us": _batched_us(lambda: flat.search(q_codes, TIMING_K), len(q_codes)),
    }


def _float_timings(q_vectors: np.ndarray, db_vectors: np.ndarray, n: int) -> dict[str, float | None]:
    import faiss

    n = min(n, len(q_vectors))
    flat = faiss.IndexFlatL2(db_vectors.shape[1])
    flat.add(np.ascontiguousarray(db_vectors, dtype=np.float32))
    queries = np.ascontiguousarray(q_vectors, dtype=np.float32)
    return {
        "lookup_us": None,
        "scan_us": _median_us(lambda i: flat.search(queries[i : i + 1], TIMING_K), n),
        "batch_us": _batched_us(lambda: flat.search(queries, TIMING_K), len(queries)),
    }


def _hybrid_timings(q_codes, db_codes, q_lat, db_lat, n: int) -> dict[str, float | None]:
    """One hybrid query: exact Hamming top-100 by look-up, then exact latent re-ranking."""
    n = min(n, len(q_codes))
    index = HammingIndex(db_codes.shape[1] * 8)
    index.add(db_codes, np.arange(len(db_codes), dtype=np.int64))

    def one(i: int) -> None:
        _, ids = index.search(q_codes[i : i + 1], k=100)
        ids = ids[0][ids[0] >= 0]
        np.argsort(((db_lat[ids] - q_lat[i]) ** 2).sum(1), kind="stable")[:TIMING_K]

    one(0)
    return {"lookup_us": _median_us(one, n), "scan_us": None, "batch_us": None}


# ---------------------------------------------------------------------------------- output
COLUMNS = (
    ("method", "method", "{}"),
    ("bits", "bits", "{}"),
    ("bytes_per_item", "bytes", "{}"),
    ("map_at_1000", "mAP@1000", "{:.3f}"),
    ("map_all", "mAP@all", "{:.3f}"),
    ("p_at_r2", "P@r<=2", "{:.3f}"),
    ("empty_ball_share", "empty", "{:.1%}"),
    ("recall_at_10", "recall@10", "{:.3f}"),
    ("r10_at_100", "R10@100", "{:.3f}"),
    ("lookup_us", "lookup us", "{:.1f}"),
    ("scan_us", "scan us", "{:.1f}"),
    ("batch_us", "batch us", "{:.2f}"),
    ("train_s", "train s", "{:.1f}"),
)


def format_row(row: dict[str, Any]) -> str:
    return " | ".join(_cell(row.get(key), fmt) for key, _, fmt in COLUMNS)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (None shown as '-')."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + format_row(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def plot(result: BenchResult, path) -> None:
    """mAP@1000 against bits per binary method, beside precision-recall curves of Hamming balls."""
    from hashae.images import line_plot, side_by_side

    by_method: dict[str, tuple[list[float], list[float]]] = {}
    for row in result.rows:
        if row["p_at_r2"] is not None or row["method"] == "hybrid":
            xs, ys = by_method.setdefault(row["method"], ([], []))
            xs.append(row["bits"])
            ys.append(row["map_at_1000"])
    panels = [line_plot(by_method, title="mAP@1000 by code length", xlabel="bits", ylabel="mAP")]
    curves = {name: (c["recall"], c["precision"]) for name, c in result.pr_curves.items()}
    if curves:
        panels.append(line_plot(curves, title="Hamming-ball precision / recall", xlabel="recall", ylabel="precision"))
    side_by_side(panels).save(path)
