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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from hashae.errors import HashaeError
from hashae.events import Reporter, task
from hashae.index.copies import TRANSFORMS, make_copies
from hashae.index.duplicates import Threshold, check_threshold, default_threshold
from hashae.index.query import QueryEngine

TARGET_PRECISION = 0.999
DEFAULT_SAMPLE = 1000  # files altered: 200 gave a 99.9% limit of 0.20, 500 0.22, 1,000 0.15 on the bench's store
MIN_ORIGINALS = 10  # fewer readable files than this measure nothing worth trusting


class CalibrationError(HashaeError):
    """The store cannot be calibrated (too few readable files, or no limit reaches the precision)."""


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
    chosen = np.sort(np.random.default_rng(seed).choice(ids, size=min(sample, len(ids)), replace=False))
    originals, images = _readable(engine, chosen, infos)
    if len(originals) < MIN_ORIGINALS:
        raise CalibrationError(f"only {len(originals)} of the {len(chosen)} sampled files could be read (at least {MIN_ORIGINALS} are needed); is the indexed folder still there?")
    transforms = [t for t in TRANSFORMS if t != "identity"]
    content = _ContentUnits(ids, infos)
    right, wrong = [], []
    with task(report, "calibrating on altered copies", total=len(transforms)) as progress:
        for transform in transforms:
            pixels = np.stack([engine.decode(data) for data in make_copies(images, transform, seed=seed)])
            codes, latents = engine.encode(pixels)
            balls = view.range_hamming(codes, radius=radius)
            for original, latent, ball in zip(originals, latents, balls):
                distances = ((view.latents_of(ball.ids) - latent) ** 2).sum(1)  # (n,) squared L2
                same = content.same_as(original, ball.ids)
                right.append(distances[same].min() if same.any() else np.inf)
                wrong.append(distances[~same])
            progress.advance(1)
    return _best_limit(np.array(right), np.concatenate(wrong), radius=radius, target=target, originals=len(originals))


class _ContentUnits:
    """Which items hold the same file content (an unknown, empty content hash matches nothing)."""

    def __init__(self, ids: np.ndarray, infos) -> None:
        self.ids = np.sort(ids)
        digests = [infos[i].content_hash or f"unknown {i}" for i in self.ids.tolist()]
        self.unit = np.unique(digests, return_inverse=True)[1]  # (n,) one number per content

    def same_as(self, original: int, candidates: np.ndarray) -> np.ndarray:
        """bool (len(candidates),): each candidate is the original or has its file content."""
        unit = self.unit[np.searchsorted(self.ids, np.append(candidates, original))]
        return unit[:-1] == unit[-1]


def _readable(engine: QueryEngine, chosen: np.ndarray, infos) -> tuple[list[int], list[Image.Image]]:
    """The sampled items whose files can still be opened, and their images in the models' colour
    mode (the copies' transforms, JPEG among them, need plain greyscale or RGB)."""
    mode = "L" if engine.settings.channels == 1 else "RGB"
    originals, images = [], []
    for item_id in chosen.tolist():
        path = engine.file_of(infos[item_id].path)
        try:
            with Image.open(path) as img:
                images.append(img.convert(mode))
        except (OSError, UnidentifiedImageError, ValueError):
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
