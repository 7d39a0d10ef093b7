"""The duplicates threshold calibrated on a store's own images (`hashae duplicates --calibrate`).

The default threshold (index/duplicates.py) was calibrated once, on the near-duplicate bench's
Fashion-MNIST store. A store's own models, trained on its own images, put copies at their own
latent distances (the same recipe trained twice on the same images moved the limit from 0.1675 to
0.1333), so a store can measure its threshold instead: altered copies of a sample of its files
(index/copies.py: every transform of the bench but the identity) are encoded with the store's
models, each copy's Hamming ball (the threshold's radius) is looked up, and the latent limit is
the largest whose pairs hold the target precision. A pair (copy, item in its ball) is right when
the item is the copy's original or has the same file content.

    calibration = calibrate_threshold(QueryEngine.open(store))
    find_duplicate_groups(view, threshold=calibration.threshold)

What `hashae duplicates`, Store.duplicates and the page use by default is the store's own
calibration (store_threshold): measured at the end of the `hashae index` run that trained the
store's current models (index/pipeline.py), or by the first call that finds none, kept in
SAVED_FILE beside the VAE's checkpoint (a new pair of models has its own folder, so a retrain
measures again), and measured again when the store has grown or shrunk RESIZE_FACTOR times. Why not
the bench's threshold everywhere: a model trained on other images puts copies at other latent
distances. The bench's limit (0.1478) held precision 0.9992 on the bench's own 60,000-image store
but 0.9975 on the 6,000-image `make demo` store, whose own 99.9% limit is 0.039 (2026-12-01).

    chosen = duplicates_threshold(engine)                # chosen.threshold, chosen.source
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hashae.decode import loaded_image
from hashae.durable import replace_synced
from hashae.errors import DataError, HashaeError
from hashae.events import Reporter, task
from hashae.index.backends.base import ReadView
from hashae.index.copies import TRANSFORMS, alter
from hashae.index.duplicates import DuplicatesError, Threshold, asked_threshold, check_threshold, default_threshold
from hashae.index.query import QueryEngine

TARGET_PRECISION = 0.999
DEFAULT_SAMPLE = 1000  # files altered: 200 gave a 99.9% limit of 0.20, 500 0.22, 1,000 0.15 on the bench's store
MIN_ORIGINALS = 10  # fewer readable files than this measure nothing worth trusting
ORIGINAL_SIDE_FACTOR = 4  # originals are altered at most this many times the models' input side
SAVED_FILE = "duplicates-calibration.json"  # beside the VAE's checkpoint: the store's own threshold
RESIZE_FACTOR = 2  # a kept calibration is measured again once the store holds this many times more (or fewer) items
_measuring = threading.Lock()  # one measurement at a time (the server's first requests wait for it)


class CalibrationError(HashaeError):
    """The store cannot be calibrated (too few readable files, or no limit reaches the precision)."""


class UnreadableFilesError(CalibrationError):
    """Too few of the sampled files can be read (the indexed folder moved or is not mounted)."""


@dataclass(frozen=True)
class Calibration:
    """A threshold measured on a store's own copies. precision: over the (copy, item) pairs within
    it; recall: the share of the copies whose original is within it; copies and originals: how many
    were measured."""

    threshold: Threshold
    precision: float
    recall: float
    copies: int
    originals: int
    target: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": self.threshold.as_dict()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Calibration:
        return cls(**{**document, "threshold": Threshold(**document["threshold"])})


@dataclass(frozen=True)
class ChosenThreshold:
    """The threshold a duplicates search uses and where it comes from. source: "store" (the store's
    own calibration), "bench" (the default calibrated on the near-duplicate bench) or "asked" (the
    caller's). calibration: the store's measurement behind a "store" threshold; note: why the
    bench's default stands in for the store's own (it could not be measured)."""

    threshold: Threshold
    source: str
    calibration: Calibration | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """What a duplicates document says about its threshold: the threshold and where it came from."""
        document: dict[str, Any] = {"threshold": self.threshold.as_dict(), "threshold_source": self.source}
        if self.calibration is not None:
            document["calibration"] = self.calibration.as_dict()
        if self.note:
            document["threshold_note"] = self.note
        return document


def calibrate_threshold(
    engine: QueryEngine,
    *,
    sample: int = DEFAULT_SAMPLE,
    radius: int | None = None,
    target: float = TARGET_PRECISION,
    seed: int = 0,
    report: Reporter | None = None,
) -> Calibration:
    """The largest latent limit at `radius` (default: the calibrated default radius) whose pairs
    hold precision >= target on altered copies of `sample` of the store's files (drawn with
    numpy's default_rng(seed)); CalibrationError when fewer than MIN_ORIGINALS files can be read or
    no limit reaches the target."""
    view = engine.view
    radius = check_threshold(Threshold(default_threshold(view.settings.bits).radius if radius is None else radius, None), bits=view.settings.bits).radius
    ids = view.item_ids()
    infos = view.items(ids.tolist())
    if len(ids) < MIN_ORIGINALS:
        raise CalibrationError(f"the store holds {len(ids)} items; measuring a threshold needs at least {MIN_ORIGINALS}")
    chosen = np.sort(np.random.default_rng(seed).choice(ids, size=min(sample, len(ids)), replace=False))
    originals, images = _readable(engine, chosen, infos)
    if len(originals) < MIN_ORIGINALS:
        raise UnreadableFilesError(f"only {len(originals)} of the {len(chosen)} sampled files could be read (at least {MIN_ORIGINALS} are needed); is the indexed folder still there?")
    transforms = [t for t in TRANSFORMS if t != "identity"]
    content = _ContentUnits(ids, infos)
    original_units = content.unit_of(np.asarray(originals))
    right, wrong = [], []
    with task(report, "calibrating on altered copies", total=len(transforms)) as progress:
        for transform in transforms:
            pixels = np.stack([engine.decode_altered(copy) for copy in alter(images, transform, seed=seed)])
            codes, latents = engine.encode(pixels)
            balls = view.range_hamming(codes, radius=radius)
            members = np.concatenate([ball.ids for ball in balls])  # every copy's ball, one after the other
            copy_of = np.repeat(np.arange(len(balls)), [len(ball.ids) for ball in balls])  # (m,) whose ball
            stored = view.latents_of(members) if len(members) else np.empty((0, latents.shape[1]), np.float32)
            distances = ((stored - latents[copy_of]) ** 2).sum(1)  # (m,) squared L2
            same = content.unit_of(members) == original_units[copy_of]
            nearest_right = np.full(len(balls), np.inf)
            np.minimum.at(nearest_right, copy_of[same], distances[same])
            right.append(nearest_right)
            wrong.append(distances[~same])
            progress.advance(1)
    return _best_limit(np.concatenate(right), np.concatenate(wrong), radius=radius, target=target, originals=len(originals))


def duplicates_threshold(
    engine: QueryEngine,
    *,
    radius: int | None = None,
    latent_max: float | None = None,
    codes_only: bool = False,
    report: Reporter | None = None,
) -> ChosenThreshold:
    """The threshold of a duplicates search as asked: the caller's latent limit (or none, codes_only)
    when given; at the default radius, the store's own calibration (store_threshold); at another
    radius, the bench's latent limit (the store's was measured at the default radius). Raises
    DuplicatesError for a radius or limit that cannot apply, or a limit with codes_only."""
    if codes_only and latent_max is not None:
        raise DuplicatesError("give either codes_only or latent_max, not both")
    bits = engine.settings.bits
    if codes_only or latent_max is not None:
        return ChosenThreshold(asked_threshold(bits, radius=radius, latent_max=latent_max, codes_only=codes_only), "asked")
    if radius is not None and radius != default_threshold(bits).radius:
        return ChosenThreshold(asked_threshold(bits, radius=radius), "bench")
    return store_threshold(engine, report=report)


def store_threshold(engine: QueryEngine, *, report: Reporter | None = None) -> ChosenThreshold:
    """The store's own threshold: calibrate_threshold at the defaults (radius, sample, precision),
    measured the first time it is asked for the store's current models (the `hashae index` run that
    trained them asks; 3-6 s for 1,000 files on 2 cores) and kept in SAVED_FILE; measured again when
    the store has grown or shrunk RESIZE_FACTOR times since. Where it cannot be measured (too few readable files, no limit
    reaching the precision) the bench's default stands in, and the reason is kept too, so a store
    is not measured again on every call; unreadable files are not kept as a reason (the folder may
    be back next time). A store that cannot be written to is measured each time."""
    view = engine.view
    with _measuring:
        record = _kept_record(view)
        if record is None:
            record, worth_keeping = _measured_record(engine, report)
            if worth_keeping:
                _keep(view, record)
    return _chosen(record, view.settings.bits)


def kept_threshold(latent_dir: Path, *, model_ids: tuple[int, int], items: int, bits: int) -> ChosenThreshold | None:
    """The store's own threshold as kept in the VAE's checkpoint folder for the (hashing, latent)
    model ids and a store of `items` items, without measuring anything (None: not measured yet, or
    measured on a store of another size): what `hashae info` shows (from the catalogue alone, so
    a Milvus store's server is not started for it)."""
    record = _record_at(latent_dir / SAVED_FILE, model_ids, items)
    return None if record is None else _chosen(record, bits)


def _chosen(record: dict[str, Any], bits: int) -> ChosenThreshold:
    if "calibration" in record:
        calibration = Calibration.from_dict(record["calibration"])
        return ChosenThreshold(calibration.threshold, "store", calibration)
    return ChosenThreshold(default_threshold(bits), "bench", note=f"this store's own threshold could not be measured: {record['error']}")


def measure_threshold(
    engine: QueryEngine,
    *,
    sample: int = DEFAULT_SAMPLE,
    radius: int | None = None,
    target: float = TARGET_PRECISION,
    report: Reporter | None = None,
) -> ChosenThreshold:
    """calibrate_threshold now (`hashae duplicates --calibrate`), kept as the store's own threshold
    when made at store_threshold's defaults (radius, sample, precision). Raises CalibrationError."""
    calibration = calibrate_threshold(engine, sample=sample, radius=radius, target=target, report=report)
    if (calibration.threshold.radius, sample, target) == (default_threshold(engine.settings.bits).radius, DEFAULT_SAMPLE, TARGET_PRECISION):
        _keep(engine.view, {**_record_head(engine.view), "calibration": calibration.as_dict()})
    return ChosenThreshold(calibration.threshold, "store", calibration)


def _record_head(view: ReadView) -> dict[str, Any]:
    models = view.models()
    return {
        "hashing_model": models.hashing.id, "latent_model": models.latent.id, "items": view.n_items,
        "generation": view.gen, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _measured_record(engine: QueryEngine, report: Reporter | None) -> tuple[dict[str, Any], bool]:
    """A measurement as a record, and whether it is worth keeping (not when files could not be read)."""
    head = _record_head(engine.view)
    try:
        return {**head, "calibration": calibrate_threshold(engine, report=report).as_dict()}, True
    except CalibrationError as error:
        return {**head, "error": str(error)}, not isinstance(error, UnreadableFilesError)


def _saved_path(view: ReadView) -> Path:
    return view.model_dir(view.models().latent) / SAVED_FILE


def _keep(view: ReadView, record: dict[str, Any]) -> None:
    try:
        replace_synced(_saved_path(view), json.dumps(record, indent=1).encode())
    except OSError:
        pass  # a read-only store: the measurement still serves this call


def _kept_record(view: ReadView) -> dict[str, Any] | None:
    """The record kept for the view's models, when it was measured on a store of about its size."""
    models = view.models()
    return _record_at(_saved_path(view), (models.hashing.id, models.latent.id), view.n_items)


def _record_at(path: Path, model_ids: tuple[int, int], items: int) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
        same_models = (record["hashing_model"], record["latent_model"]) == tuple(model_ids)
        items, measured_on = max(items, 1), max(record["items"], 1)
        similar_size = max(items, measured_on) < RESIZE_FACTOR * min(items, measured_on)
        usable = "error" in record or Calibration.from_dict(record["calibration"]).threshold.latent_max is not None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if same_models and similar_size and usable else None


class _ContentUnits:
    """Which items hold the same file content (an unknown, empty content hash matches nothing)."""

    def __init__(self, ids: np.ndarray, infos) -> None:
        self.ids = np.sort(ids)
        digests = [infos[i].content_hash or f"unknown {i}" for i in self.ids.tolist()]
        self.unit = np.unique(digests, return_inverse=True)[1]  # (n,) one number per content

    def unit_of(self, items: np.ndarray) -> np.ndarray:
        """int (len(items),): one number per file content; equal numbers, the same content."""
        return self.unit[np.searchsorted(self.ids, items)]


def _readable(engine: QueryEngine, chosen: np.ndarray, infos) -> tuple[list[int], list[Image.Image]]:
    """The sampled items whose files can still be read, and their images upright (EXIF) in the
    models' colour mode (the copies' transforms, JPEG among them, need plain greyscale or RGB),
    scaled down to at most ORIGINAL_SIDE_FACTOR times the models' input side: the decoder squashes
    every copy to that side anyway, and a thousand full-size photos would not fit in memory."""
    settings = engine.settings
    mode, side = ("L" if settings.channels == 1 else "RGB"), ORIGINAL_SIDE_FACTOR * settings.image_size
    originals, images = [], []
    for item_id in chosen.tolist():
        try:
            with loaded_image(engine.file_of(infos[item_id].path), draft=(mode, side)) as (img, _):
                img.thumbnail((side, side))
                images.append(img.convert(mode))
        except DataError:
            continue
        originals.append(item_id)
    return originals, images


def _best_limit(right: np.ndarray, wrong: np.ndarray, *, radius: int, target: float, originals: int) -> Calibration:
    """The largest latent limit among the pairs' distances with precision >= target.

    right: per copy, its original's latent distance (inf: not in its ball); wrong: the distances of
    every other item in the copies' balls."""
    right_sorted, wrong_sorted = np.sort(right[np.isfinite(right)]), np.sort(wrong)
    candidates = np.unique(right_sorted)
    true_pairs = np.searchsorted(right_sorted, candidates, side="right")
    false_pairs = np.searchsorted(wrong_sorted, candidates, side="right")
    precision = true_pairs / np.maximum(true_pairs + false_pairs, 1)
    valid = np.flatnonzero(precision >= target)
    if not len(valid):
        raise CalibrationError(f"no latent limit at Hamming radius {radius} reaches precision {target:g} on {len(right)} copies of this store's images; keep the default threshold, or try a lower --precision or another --threshold")
    best = valid[-1]
    return Calibration(
        threshold=Threshold(radius, float(candidates[best])), precision=float(precision[best]),
        recall=float(true_pairs[best] / len(right)), copies=len(right), originals=originals, target=target,
    )
