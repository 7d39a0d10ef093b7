"""The near-duplicate bench (issue 13): find the original of an altered copy among 60,000 images.

Protocol (../shared/BENCHMARK.md, "Near-duplicate retrieval"): the database is Fashion-MNIST's
60,000 train images; `originals` of them are drawn with numpy.random.default_rng(0) (1,000 by
default) and each is altered by every transform of index/copies.py (JPEG, resize, brightness,
contrast, blur, noise, shift, crop, pad, rotations, flip), each copy written as the file a user
would have. Each copy is a query; its truth is its original (and any database image with exactly
the same pixels: Fashion-MNIST holds a few).

Per method and transform:
    recall@1, recall@10  the original ranked first / within the first 10. Hash functions and raw
                         pixels are ranked by distance with ties counted against them (the worst
                         rank among equal distances); hashae's modes by what `hashae query` answers
                         (index/search.py over the database's codes and VAE means, ties ordered by
                         latent distance as the product orders them).
    recall@threshold     the share of copies whose original lies within one global distance
                         threshold per method, the largest that keeps precision >= 99.9% over the
                         copies of every transform but identity (precision: the share of
                         (copy, database item) pairs within the threshold that are a copy and its
                         original). hashae hybrid: a Hamming ball of radius r confirmed by a VAE-mean
                         distance <= tau: the smallest r within 0.02 of the best recall,
                         with its best tau; it is what `hashae duplicates` groups by.

Methods: ImageHash pHash-64 and dHash-64, PDQ-256 (pip extra `bench`), raw pixels (L2 on the
28x28 decode), and hashae: `codes` (the hashing model's bits alone, ties counted against them),
`hamming`, `latent` and `hybrid` (the product's query modes). hashae's models are the store's
(--store: its checkpoints, encoded by the numpy InferenceEncoder) or trained here as `hashae index`
trains them.

Run: python -m hashae.index.bench_duplicates [--store S] [--hashing-model DIR] [--markdown F.md] [--json F.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hashae.errors import ConfigError, HashaeError
from hashae.events import Reporter, message, task
from hashae.index.copies import GEOMETRIC, PHOTOMETRIC, TRANSFORMS, make_copies

TARGET_PRECISION = 0.999
LOOSER_PRECISIONS = (0.99, 0.9)  # also reported: the recall a looser threshold would give
IMPOSTORS_KEPT = 64  # nearest wrong items kept per query: far more than the 0.1% false pairs allowed
SCORE_CHUNK = 256  # queries per (chunk, database) distance matrix
BALL_RADII = range(0, 9)  # Hamming radii tried for the hybrid (ball + latent) threshold
# The hybrid threshold takes the smallest radius whose recall is within this of the best radius's:
# each extra bit of radius multiplies the items a ball look-up returns, and `hashae duplicates`'s
# time grows with them (60,000 items: 2.3 s at radius 1, 4.2 s at 4, 9.0 s at 7), while with the
# contrastive VAE radii 2-8 found at most 1.8 more copies in 100 than radius 1 (duplicates.md).
BALL_RECALL_SLACK = 0.02
BASELINES = ("phash", "dhash", "pdq", "pixels")
HASHAE_MODES = ("codes", "hamming", "latent", "hybrid")
ALL_METHODS = (*BASELINES, *HASHAE_MODES)


class BenchDependencyError(HashaeError):
    """A baseline's package is not installed."""


@dataclass(frozen=True)
class DuplicatesBenchOptions:
    """What to run. hashae's models: hashing_model / latent_model (checkpoint folders) when given,
    else the store's, else trained as `hashae index` trains them (at bits / latent_dim)."""

    originals: int = 1000
    transforms: tuple[str, ...] = tuple(TRANSFORMS)
    methods: tuple[str, ...] = ALL_METHODS
    store: Path | None = None
    hashing_model: Path | None = None
    latent_model: Path | None = None
    bits: int = 32
    latent_dim: int = 32
    epochs: int | None = None
    quality: str = "fast"
    db_limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS] + [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ConfigError(f"unknown methods or transforms {unknown}; methods: {', '.join(ALL_METHODS)}; transforms: {', '.join(TRANSFORMS)}")
        if self.originals < 1:
            raise ConfigError(f"originals must be at least 1, got {self.originals}")


@dataclass
class DuplicatesBenchResult:
    """rows: one per (method, transform); methods: per method its threshold, bits and timing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "methods": self.methods, "info": self.info}


# ------------------------------------------------------------------------------------- scoring
class Scorer:
    """Accumulates, chunk by chunk of queries, what every metric needs from a distance matrix:
    the distance to the truth, how many wrong items are at least as near (ties against), and the
    nearest wrong distances (for the precision of a threshold)."""

    def __init__(self, n_queries: int) -> None:
        self.true_distance = np.full(n_queries, np.inf)
        self.ahead = np.zeros(n_queries, np.int64)
        self.impostors = np.full((n_queries, IMPOSTORS_KEPT), np.inf)

    def add(self, rows: slice, distances: np.ndarray, correct: Sequence[np.ndarray]) -> None:
        """distances (chunk, n_db) of the queries at rows; correct: per query its true database ids.
        Overwrites the truth's entries in `distances`."""
        distances = np.asarray(distances, dtype=np.float64)
        for i, ids in enumerate(correct):
            self.true_distance[rows.start + i] = distances[i, ids].min()
            distances[i, ids] = np.inf
        self.ahead[rows] = (distances <= self.true_distance[rows, None]).sum(axis=1)
        kept = min(IMPOSTORS_KEPT, distances.shape[1])
        nearest = np.partition(distances, kept - 1, axis=1)[:, :kept]
        self.impostors[rows, :kept] = np.sort(nearest, axis=1)

    def recall_at(self, rank: int, queries: np.ndarray) -> float:
        """Share of the queries whose truth is within the first `rank`, ties counted against."""
        return float((self.ahead[queries] < rank).mean())


@dataclass(frozen=True)
class Threshold:
    """A global distance threshold: everything at distance <= value is called a copy."""

    value: float | None  # None: no threshold reaches the precision
    precision: float
    recall: float


def calibrate(scorer: Scorer, queries: np.ndarray, *, target: float = TARGET_PRECISION) -> Threshold:
    """The largest threshold whose precision over the queries' pairs is >= target (the recall is
    monotone in it, so it is the best), from the truths and the nearest impostors."""
    truths = np.sort(scorer.true_distance[queries])
    impostors = scorer.impostors[queries]
    wrong = np.sort(impostors[np.isfinite(impostors)])
    candidates = np.unique(np.concatenate([truths[np.isfinite(truths)], wrong]))
    true_pairs = np.searchsorted(truths, candidates, side="right")
    false_pairs = np.searchsorted(wrong, candidates, side="right")
    precision = true_pairs / np.maximum(true_pairs + false_pairs, 1)
    # past the nearest K-th impostor of any query, the false pairs counted are only a lower bound
    exact = candidates < impostors[:, -1].min()
    valid = np.flatnonzero((precision >= target) & exact & (true_pairs > 0))
    if not len(valid):
        return Threshold(None, 1.0, 0.0)
    best = valid[-1]
    return Threshold(float(candidates[best]), float(precision[best]), float(true_pairs[best] / len(queries)))


def recall_within(scorer: Scorer, threshold: Threshold, queries: np.ndarray) -> float:
    if threshold.value is None:
        return 0.0
    return float((scorer.true_distance[queries] <= threshold.value).mean())


def hamming_matrix(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Hamming distances int (nq, n) between packed uint8 codes."""
    words = np.uint64 if queries.shape[1] % 8 == 0 else np.uint8
    q, d = np.ascontiguousarray(queries).view(words), np.ascontiguousarray(database).view(words)
    out = np.zeros((len(q), len(d)), np.int32)
    for w in range(q.shape[1]):
        out += np.bitwise_count(q[:, w, None] ^ d[None, :, w])
    return out


def squared_l2_matrix(queries: np.ndarray, database: np.ndarray, database_norms: np.ndarray) -> np.ndarray:
    """Squared L2 float32 (nq, n), clipped at 0."""
    q = np.asarray(queries, np.float32)
    out = (q * q).sum(1)[:, None] + database_norms[None, :] - 2.0 * (q @ database.T)
    return np.maximum(out, 0.0)


# ------------------------------------------------------------------------------------ encoders
def perceptual_hash(name: str) -> Callable[[Image.Image], np.ndarray]:
    """A baseline hash as a function of a Pillow image -> packed bits uint8."""
    try:
        if name in ("phash", "dhash"):
            import imagehash

            function = imagehash.phash if name == "phash" else imagehash.dhash
            return lambda img: np.packbits(function(img, hash_size=8).hash.reshape(-1))
        import pdqhash
    except ImportError:
        raise BenchDependencyError(f"{name} needs ImageHash and pdqhash: pip install 'hashae[bench]'") from None
    return lambda img: np.packbits(np.asarray(pdqhash.compute(np.asarray(img.convert("RGB")))[0], dtype=np.uint8))


def hash_images(function: Callable[[Image.Image], np.ndarray], images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([function(img) for img in images])


def open_copy(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# ------------------------------------------------------------------------------------ the run
@dataclass
class _Data:
    """The database (uint8 (n, H, W) and float32 (n, 1, H, W)), the originals drawn from it, the
    copies (per transform, file bytes), and each query's correct database ids."""

    pixels: np.ndarray
    x: np.ndarray
    originals: np.ndarray
    transforms: tuple[str, ...]
    copies: dict[str, list[bytes]]
    correct: list[np.ndarray]  # per query (transform-major order)
    twins: int  # originals that have a pixel-identical twin in the database

    @property
    def n_queries(self) -> int:
        return len(self.correct)

    def queries_of(self, transform: str) -> np.ndarray:
        i, n = self.transforms.index(transform), len(self.originals)
        return np.arange(i * n, (i + 1) * n)

    def calibration_queries(self) -> np.ndarray:
        chosen = [self.queries_of(t) for t in self.transforms if t != "identity"] or [self.queries_of("identity")]
        return np.concatenate(chosen)

    def copy_files(self) -> list[bytes]:
        return [data for t in self.transforms for data in self.copies[t]]


def load_data(options: DuplicatesBenchOptions) -> _Data:
    from hashae.datasets import load_fashion_mnist

    x = load_fashion_mnist("train").x
    if options.db_limit:
        x = x[: options.db_limit]
    pixels = np.rint(x[:, 0] * 255).astype(np.uint8)  # (n, H, W): the PNG files' pixels
    originals = np.random.default_rng(options.seed).choice(len(x), min(options.originals, len(x)), replace=False)
    same = defaultdict(list)
    for i, image in enumerate(pixels):
        same[image.tobytes()].append(i)
    truth = [np.array(same[pixels[o].tobytes()], np.int64) for o in originals]
    images = [Image.fromarray(pixels[o], "L") for o in originals]
    copies = {t: make_copies(images, t, seed=options.seed) for t in options.transforms}
    return _Data(pixels, x, originals, options.transforms, copies, truth * len(options.transforms), sum(len(t) > 1 for t in truth))


def run_duplicates_bench(options: DuplicatesBenchOptions, *, report: Reporter | None = None) -> DuplicatesBenchResult:
    """Measure every asked method on every asked transform (see the module docstring)."""
    started = time.perf_counter()
    hashae_modes = [m for m in options.methods if m in HASHAE_MODES]
    # the store is checked before minutes of baselines, not after them
    store_dirs = _store_model_dirs(options.store) if hashae_modes and options.store is not None else {}
    data = load_data(options)
    result = DuplicatesBenchResult(info={
        "database": len(data.x), "originals": len(data.originals), "queries": data.n_queries,
        "originals_with_twins": data.twins, "target_precision": TARGET_PRECISION, "seed": options.seed,
        "transforms": list(options.transforms),
    })
    message(report, f"{len(data.x)} database images, {len(data.originals)} originals x {len(data.transforms)} transforms")
    for method in options.methods:
        if method in BASELINES:
            _baseline(method, data, result, report)
    if hashae_modes:
        with tempfile.TemporaryDirectory(prefix="hashae-dup-bench-") as folder:
            encoders = _hashae_encoders(options, store_dirs, data, Path(folder), report, result)
            _hashae(hashae_modes, encoders, data, result, report)
    result.info["seconds"] = round(time.perf_counter() - started, 1)
    result.info["machine"] = f"{platform.machine()}, python {platform.python_version()}"
    return result


def _baseline(method: str, data: _Data, result: DuplicatesBenchResult, report: Reporter | None) -> None:
    files = data.copy_files()
    started = time.perf_counter()
    if method == "pixels":
        from hashae.decode import decode_image

        db = data.x.reshape(len(data.x), -1)
        queries = np.stack([decode_image(f, size=data.x.shape[-1], channels=1).reshape(-1) for f in files])
        encode_s = time.perf_counter() - started
        norms = (db * db).sum(1)
        distance = lambda q: squared_l2_matrix(q, db, norms)  # noqa: E731
        bits = 32 * db.shape[1]
    else:
        function = perceptual_hash(method)
        queries = hash_images(function, [open_copy(f) for f in files])
        encode_s = time.perf_counter() - started
        with task(report, f"{method}: hashing the database", total=None):
            db = hash_images(function, [Image.fromarray(p, "L") for p in data.pixels])
        distance = lambda q: hamming_matrix(q, db)  # noqa: E731
        bits = 8 * db.shape[1]
    scorer = Scorer(data.n_queries)
    with task(report, f"{method}: scoring", total=data.n_queries) as progress:
        for rows in _chunks(data.n_queries):
            scorer.add(rows, distance(queries[rows]), data.correct[rows])
            progress.advance(rows.stop - rows.start)
    threshold = calibrate(scorer, data.calibration_queries())
    ranks = {t: (scorer.recall_at(1, data.queries_of(t)), scorer.recall_at(10, data.queries_of(t))) for t in data.transforms}
    _add_method(result, method, bits=bits, threshold=threshold, scorer=scorer, data=data, ranks=ranks,
                encode_us=1e6 * encode_s / len(files))


@dataclass
class _Encoders:
    hashing: Any  # InferenceEncoder
    latent: Any
    source: str


def _hashae_encoders(options: DuplicatesBenchOptions, store_dirs: dict[str, Path], data: _Data, folder: Path, report, result) -> _Encoders:
    """store_dirs: the store's checkpoint folder per role ({} without --store)."""
    from hashae.inference import InferenceEncoder

    folders = {"hashing": options.hashing_model, "latent": options.latent_model}
    sources = {role: f"checkpoint {path}" for role, path in folders.items() if path is not None}
    for role, path in store_dirs.items():
        if folders[role] is None:
            folders[role], sources[role] = path, f"store {options.store}"
    for role, kind, size in (("hashing", "hashing", options.bits), ("latent", "vae", options.latent_dim)):
        if folders[role] is None:
            from hashae.index.bench.encoders import train_encoder

            trained = train_encoder(kind, data.x, code_size=size, folder=folder, epochs=options.epochs, quality=options.quality, seed=options.seed, report=report)
            folders[role], sources[role] = trained.folder, "trained as `hashae index` trains (fit_default)"
            result.info.setdefault("train_s", {})[role] = round(trained.train_s, 1)
    result.info["hashae_models"] = sources
    return _Encoders(InferenceEncoder.load(folders["hashing"]), InferenceEncoder.load(folders["latent"]), str(sources))


def _store_model_dirs(store: Path) -> dict[str, Path]:
    from hashae.index.backends import open_store

    with open_store(store) as opened:
        view = opened.snapshot()
        models = view.models()
        if models is None:
            raise ConfigError(f"{store}: the store has no models yet; run `hashae index FOLDER --store {store}`")
        return {"hashing": view.model_dir(models.hashing), "latent": view.model_dir(models.latent)}


def _encode(encoders: _Encoders, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, latents = [], []
    for start in range(0, len(x), 4096):
        codes.append(encoders.hashing.codes(x[start : start + 4096]))
        latents.append(encoders.latent.embed(x[start : start + 4096]))
    return np.concatenate(codes), np.concatenate(latents)


def _hashae(modes: list[str], encoders: _Encoders, data: _Data, result: DuplicatesBenchResult, report) -> None:
    from hashae.decode import decode_image
    from hashae.index.array_view import ArrayView
    from hashae.index.search import search

    size, channels = encoders.hashing.input_shape[-1], encoders.hashing.input_shape[0]
    if channels != 1 or data.x.shape[-1] != size:
        raise ConfigError(f"the store's models take {channels}x{size}x{size} images; this bench's database is 1x28x28 (Fashion-MNIST)")
    started = time.perf_counter()
    q_x = np.stack([decode_image(f, size=size, channels=channels) for f in data.copy_files()])
    q_codes, q_latents = _encode(encoders, q_x)
    encode_us = 1e6 * (time.perf_counter() - started) / len(q_x)
    db_codes, db_latents = _encode(encoders, data.x)
    bits = db_codes.shape[1] * 8
    result.info["hashae_bits"], result.info["distinct_codes"] = bits, int(len(np.unique(db_codes, axis=0)))

    hamming, latent = Scorer(data.n_queries), Scorer(data.n_queries)
    balls = {r: Scorer(data.n_queries) for r in BALL_RADII if r <= bits}
    norms = (db_latents * db_latents).sum(1)
    with task(report, "hashae: scoring", total=data.n_queries) as progress:
        for rows in _chunks(data.n_queries):
            h = hamming_matrix(q_codes[rows], db_codes)
            l2 = squared_l2_matrix(q_latents[rows], db_latents, norms)
            hamming.add(rows, h.copy(), data.correct[rows])
            latent.add(rows, l2.copy(), data.correct[rows])
            for radius, scorer in balls.items():
                scorer.add(rows, np.where(h <= radius, l2, np.inf), data.correct[rows])
            progress.advance(rows.stop - rows.start)
    calibration = data.calibration_queries()
    thresholds = {"codes": calibrate(hamming, calibration), "latent": calibrate(latent, calibration)}
    ball_thresholds = {r: calibrate(s, calibration) for r, s in balls.items()}
    best_recall = max(t.recall for t in ball_thresholds.values())
    best_radius = min(r for r, t in ball_thresholds.items() if t.recall >= best_recall - BALL_RECALL_SLACK)
    thresholds["hamming"], thresholds["hybrid"] = thresholds["codes"], ball_thresholds[best_radius]
    threshold_scorers = {"codes": hamming, "hamming": hamming, "latent": latent, "hybrid": balls[best_radius]}
    result.info["hybrid_ball"] = {str(r): {"latent_max": t.value, "precision": t.precision, "recall": t.recall} for r, t in ball_thresholds.items()}

    view = ArrayView(db_codes, db_latents)
    for mode in modes:
        if mode == "codes":
            ranks = {t: (hamming.recall_at(1, data.queries_of(t)), hamming.recall_at(10, data.queries_of(t))) for t in data.transforms}
        else:
            ranks = _product_ranks(mode, view, q_codes, q_latents, data, search, report)
        extra = {"hamming_radius": best_radius} if mode == "hybrid" else {}
        _add_method(result, mode, bits=bits, threshold=thresholds[mode], scorer=threshold_scorers[mode], data=data,
                    ranks=ranks, encode_us=encode_us, **extra)


def _product_ranks(mode, view, q_codes, q_latents, data: _Data, search, report) -> dict[str, tuple[float, float]]:
    """recall@1 and recall@10 per transform of what `hashae query --mode MODE -k 10` answers."""
    first, top = np.zeros(data.n_queries, bool), np.zeros(data.n_queries, bool)
    with task(report, f"hashae {mode}: searching", total=data.n_queries) as progress:
        for rows in _chunks(data.n_queries):
            answers = search(view, codes=q_codes[rows], latents=q_latents[rows], mode=mode, k=10)
            for i, hits in enumerate(answers):
                ids = [hit.id for hit in hits]
                correct = data.correct[rows.start + i]
                first[rows.start + i] = bool(ids) and ids[0] in correct
                top[rows.start + i] = bool(np.isin(ids, correct).any())
            progress.advance(rows.stop - rows.start)
    return {t: (float(first[data.queries_of(t)].mean()), float(top[data.queries_of(t)].mean())) for t in data.transforms}


def _add_method(result, method, *, bits, threshold: Threshold, scorer: Scorer, data: _Data, ranks, encode_us, **extra) -> None:
    result.methods[method] = {
        "bits": bits, "threshold": threshold.value, "precision_at_threshold": threshold.precision,
        "recall_at_threshold": threshold.recall, "query_encode_us": round(encode_us, 1),
        "looser": {  # what a lower precision would buy (the same calibration at other targets)
            str(target): {"threshold": t.value, "recall": t.recall}
            for target, t in ((target, calibrate(scorer, data.calibration_queries(), target=target)) for target in LOOSER_PRECISIONS)
        },
        **extra,
    }
    for transform in data.transforms:
        at_1, at_10 = ranks[transform]
        result.rows.append({
            "method": method, "transform": transform, "recall_at_1": at_1, "recall_at_10": at_10,
            "recall_at_threshold": recall_within(scorer, threshold, data.queries_of(transform)),
        })


def _chunks(n: int):
    for start in range(0, n, SCORE_CHUNK):
        yield slice(start, min(start + SCORE_CHUNK, n))


# ------------------------------------------------------------------------------------ the report
METHOD_TITLES = {
    "phash": "pHash", "dhash": "dHash", "pdq": "PDQ", "pixels": "pixels L2",
    "codes": "hashae codes", "hamming": "hashae hamming", "latent": "hashae latent", "hybrid": "hashae hybrid",
}
GOALS = {"photometric recall@1": 0.95, "shift 2px": 0.8, "crop 10%": 0.8, "rotate 5": 0.6}


def markdown(result: DuplicatesBenchResult) -> str:
    """Three transform x method tables (recall@1, recall@10, recall@threshold), the thresholds,
    and which of issue 13's goals each hashae mode meets."""
    methods = list(result.methods)
    cell = {(r["method"], r["transform"]): r for r in result.rows}
    info = result.info
    lines = [
        "# Near-duplicate bench: the original of an altered copy among the database",
        "",
        f"Database: {info['database']} Fashion-MNIST train images; {info['originals']} of them altered by each "
        f"transform ({info['queries']} queries); hashae models: {_sources(info.get('hashae_models'))}; {info['seconds']:.0f} s on {info['machine']}.",
        "",
    ]
    if info.get("command"):
        lines[3:3] = ["", f"Command: `{info['command']}`"]
    for metric, title in (("recall_at_1", "recall@1"), ("recall_at_10", "recall@10"), ("recall_at_threshold", "recall at the precision >= 99.9% threshold")):
        lines += [f"### {title}", "", "| transform | " + " | ".join(_title(result, m) for m in methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for transform in result.info["transforms"]:
            lines.append(f"| {transform} | " + " | ".join(f"{cell[m, transform][metric]:.3f}" for m in methods) + " |")
        lines.append("")
    lines += ["### thresholds (precision >= 99.9% over the copies of every transform but identity)", "",
              "| method | bits | threshold | precision | recall | recall at precision 99% / 90% | query encode (us) |", "|---|---|---|---|---|---|---|"]
    for m, info in result.methods.items():
        value = "none" if info["threshold"] is None else f"{info['threshold']:g}"
        if m == "hybrid" and info["threshold"] is not None:
            value = f"Hamming <= {info['hamming_radius']} and latent <= {info['threshold']:.4g}"
        looser = " / ".join(f"{info['looser'][str(p)]['recall']:.3f}" for p in LOOSER_PRECISIONS) if "looser" in info else "-"
        lines.append(f"| {_title(result, m)} | {info['bits']} | {value} | {info['precision_at_threshold']:.4f} | {info['recall_at_threshold']:.3f} | {looser} | {info['query_encode_us']} |")
    lines += ["", *goal_lines(result)]
    return "\n".join(lines) + "\n"


def goal_lines(result: DuplicatesBenchResult) -> list[str]:
    """Issue 13's goals for each hashae mode: met or not, with the numbers."""
    cell = {(r["method"], r["transform"]): r["recall_at_1"] for r in result.rows}
    transforms = result.info["transforms"]
    lines = ["### issue 13 goals (recall@1)", ""]
    for mode in (m for m in HASHAE_MODES if m in result.methods):
        checks = []
        photometric = [t for t in PHOTOMETRIC if t in transforms]
        worst = min(photometric, key=lambda t: cell[mode, t], default=None)
        if worst:
            checks.append(_check(f"photometric >= 0.95 (worst {worst} {cell[mode, worst]:.3f})", cell[mode, worst] >= 0.95))
        for transform, goal in (("shift 2px", 0.8), ("crop 10%", 0.8), ("rotate 5", 0.6)):
            if transform in transforms:
                checks.append(_check(f"{transform} >= {goal} ({cell[mode, transform]:.3f})", cell[mode, transform] >= goal))
        rivals = [m for m in ("phash", "pdq") if m in result.methods]
        behind = [t for t in transforms if t != "identity" and any(cell[r, t] >= cell[mode, t] for r in rivals)]
        if rivals:
            checks.append(_check(f"ahead of {' and '.join(rivals)} on every transform" + (f" (not on: {', '.join(behind)})" if behind else ""), not behind))
        lines.append(f"- {METHOD_TITLES[mode]}: " + "; ".join(checks))
    return lines


def _sources(models: dict[str, str] | None) -> str:
    if not models:
        return "-"
    if len(set(models.values())) == 1:
        return next(iter(models.values()))
    return ", ".join(f"{role} from {source}" for role, source in models.items())


def _check(text: str, met: bool) -> str:
    return f"{'met' if met else 'NOT met'}: {text}"


def _title(result: DuplicatesBenchResult, method: str) -> str:
    return f"{METHOD_TITLES[method]}-{result.methods[method]['bits']}" if method in BASELINES and method != "pixels" else METHOD_TITLES[method]


# ------------------------------------------------------------------------------------ command
def main(argv: Sequence[str] | None = None) -> None:
    """python -m hashae.index.bench_duplicates: run the bench, print the tables, write the files."""
    parser = argparse.ArgumentParser(prog="python -m hashae.index.bench_duplicates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="Use this store's models (default: train them as `hashae index` does).")
    parser.add_argument("--hashing-model", type=Path, help="A hashing model's checkpoint folder (instead of the store's).")
    parser.add_argument("--latent-model", type=Path, help="A VAE's checkpoint folder (instead of the store's).")
    parser.add_argument("--bits", type=int, default=32, help="Code length when training (default 32).")
    parser.add_argument("--originals", type=int, default=1000, help="Database images to alter (default 1000).")
    parser.add_argument("--methods", help=f"Comma-separated subset of {','.join(ALL_METHODS)}.")
    parser.add_argument("--transforms", help=f"Comma-separated subset of: {'; '.join(TRANSFORMS)}.")
    parser.add_argument("--db-limit", type=int, help="Only the first N database images (quick runs).")
    parser.add_argument("--epochs", type=int, help="Training epochs when training (default: the product's).")
    parser.add_argument("--markdown", type=Path, help="Write the tables as Markdown here.")
    parser.add_argument("--json", type=Path, help="Write the rows and thresholds as JSON here.")
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress output.")
    args = parser.parse_args(argv)
    from hashae.cli.progress import reporter

    options = DuplicatesBenchOptions(
        store=args.store, hashing_model=args.hashing_model, latent_model=args.latent_model, bits=args.bits, originals=args.originals, db_limit=args.db_limit, epochs=args.epochs,
        methods=tuple(m.strip() for m in args.methods.split(",")) if args.methods else ALL_METHODS,
        transforms=tuple(t.strip() for t in args.transforms.split(",")) if args.transforms else tuple(TRANSFORMS),
    )
    command = "python -m hashae.index.bench_duplicates " + " ".join(argv if argv is not None else sys.argv[1:])
    with reporter(args.quiet) as report:
        print(bench_task(options, markdown_path=args.markdown, json_path=args.json, report=report, command=command.strip()))


def bench_task(
    options: DuplicatesBenchOptions,
    *,
    markdown_path: Path | None = None,
    json_path: Path | None = None,
    report: Reporter | None = None,
    command: str | None = None,
) -> str:
    """Run the bench, write its Markdown and JSON where asked, return the Markdown (what
    `hashae bench --task duplicates` runs)."""
    result = run_duplicates_bench(options, report=report)
    if command:
        result.info["command"] = command
    text = markdown(result)
    if markdown_path:
        Path(markdown_path).write_text(text)
    if json_path:
        Path(json_path).write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    return text


if __name__ == "__main__":
    main()
