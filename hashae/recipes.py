"""Fitting a model end to end (normalise, train, calibrate, measure) and the product's training budget.

Everything that trains a model (`hashae train`, `hashae index`, `hashae bench`) goes through `fit`,
with configs from hashae.variants.make_config and training settings from
hashae.trainer.train_config_for, so the defaults that win the bench are the defaults users get.
The tuning history behind those defaults: benchmarks/results/tuning-*.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from hashae.codes import CodeStats, code_stats
from hashae.errors import ConfigError
from hashae.events import Reporter, task
from hashae.inference import image_view
from hashae.neighbours import nearest
from hashae.trainer import History, TrainConfig, _split_ids, train, train_config_for
from hashae.variants import AEConfig, Autoencoder, Corruption, create, make_config

# The training budget in optimiser steps grows with the folder as the square root of its size:
# STEPS_AT_REFERENCE at REFERENCE_ITEMS items, never fewer than MIN_STEPS (nor more than MAX_EPOCHS
# passes over a tiny folder), so a first run costs what its folder is worth (mAP against steps at
# 6k / 20k / 60k items: benchmarks/results/tuning-2026-11-30.md). It was a fixed 3,500 steps.
REFERENCE_ITEMS, STEPS_AT_REFERENCE = 60_000, 2000
MIN_STEPS = 500
MIN_EPOCHS, MAX_EPOCHS = 1, 200
QUALITY_STEPS = {"fast": 1.0, "high": 3.0}  # --quality high trains three times longer
# Label-free neighbour pairs for models that use them: k nearest items in PCA space of this many dims.
NEIGHBOURS_K, NEIGHBOURS_DIMS = 10, 64


# Named recipes beside the kinds' own defaults: name -> (kind, config fields over its defaults).
# "seed": the seed's plain recipe, as its card describes it: Gaussian noise ramped before a sigmoid
# code layer, bits at 0.5, no standardisation, gain, input corruption or extra terms.
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": ("hashing", {
        "noise_max": 4.0, "hard_phase": 0.0, "code_norm": False, "code_gain": False, "balance": 0.0,
        "decorrelation": 0.0, "consistency": 0.0, "sparsity": 0.0, "corruption": Corruption("none", 0.0),
        "standardise_images": False,
    }),
}


def default_steps(n_items: int) -> int:
    """The optimiser steps a folder of n_items gets: STEPS_AT_REFERENCE * sqrt(n / REFERENCE_ITEMS),
    at least MIN_STEPS."""
    return max(MIN_STEPS, round(STEPS_AT_REFERENCE * math.sqrt(max(n_items, 1) / REFERENCE_ITEMS)))


def default_epochs(n_items: int, *, batch_size: int = TrainConfig.batch_size) -> int:
    """Epochs giving about default_steps(n_items) optimiser steps, clamped to [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_items / batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(default_steps(n_items) / steps_per_epoch))))


def with_epochs(train_config: TrainConfig, epochs: int | None, n_items: int, *, scale: float = 1.0) -> TrainConfig:
    """train_config with the given epochs, or the size-scaled default (times `scale`) when None."""
    default = max(1, round(default_epochs(n_items, batch_size=train_config.batch_size) * scale))
    return replace(train_config, epochs=epochs or default)


@dataclass
class FitResult:
    """A trained, calibrated model with its history; code statistics when it makes binary codes."""

    model: Autoencoder
    history: History
    stats: CodeStats | None
    noise_flip_share: float | None = None  # bits flipped by the final training noise at inference

    def summary(self) -> dict[str, Any]:
        """Kind, epochs, seconds, the best epoch's loss terms and the code statistics, JSON-ready."""
        out: dict[str, Any] = {
            "kind": self.model.config.kind,
            "epochs": len(self.history.epochs),
            "seconds": round(self.history.seconds, 2),
            "final": {k: round(v, 4) for k, v in self.history.final.items()},
        }
        if self.stats is not None:
            out["code_stats"] = {**self.stats.as_dict(), "noise_flip_share": self.noise_flip_share}
        return out


def neighbour_view(config: AEConfig, x: np.ndarray) -> np.ndarray:
    """The inputs in which a model's label-free neighbours are found: as its encoder sees them
    (hashae.inference.image_view; per-image standardisation lifts the 10-NN table's same-class
    share on Fashion-MNIST from 0.814 to 0.830, and mAP@1000 by 0.004-0.005, tuning-2026-12-01.md)."""
    return image_view(x, centre=config.centre_images, standardise=config.standardise_images, scale=config.scale_images)


def fit(
    config: AEConfig,
    x: np.ndarray,
    train_config: TrainConfig,
    *,
    report: Reporter | None = None,
    name: str | None = None,
    pairs: np.ndarray | None = None,
) -> FitResult:
    """Build, normalise, train and calibrate a model on x (n, *input_shape) float32.

    A model that uses neighbour pairs gets them computed here without labels (hashae.neighbours,
    PCA + exact k-NN, counted in the history's seconds) unless `pairs` is given. Progress goes to
    `report` as the tasks "finding neighbours for the <name>" and "training <name>" (name: e.g.
    "hashing model"; default "<kind> model")."""
    torch.manual_seed(train_config.seed)  # the initial weights too: same seed, same model
    model = create(config)
    model.fit_normalisation(x)
    extra_seconds = 0.0
    if model.uses_pairs and pairs is None:
        started = time.perf_counter()
        with task(report, f"finding neighbours for the {name or f'{config.kind} model'}", total=len(x)) as finding:
            pairs = nearest(neighbour_view(config, x), k=NEIGHBOURS_K, dims=NEIGHBOURS_DIMS, seed=train_config.seed)
            finding.advance(len(x))
        extra_seconds = time.perf_counter() - started
    history = train(model, x, train_config, report=report, name=name, pairs=pairs if model.uses_pairs else None)
    history.seconds += extra_seconds
    model.cpu()
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    model.calibrate(inputs, seed=train_config.seed)
    held_out = inputs[held_out_ids(len(x), train_config)]
    stats, flips = measure_codes(model, held_out), noise_flip_share(model, held_out)
    return FitResult(model=model, history=history, stats=stats, noise_flip_share=flips)


def fit_default(
    kind: str,
    x: np.ndarray,
    *,
    code_size: int,
    epochs: int | None = None,
    quality: str = "fast",
    seed: int = 0,
    device: str = "auto",
    report: Reporter | None = None,
    name: str | None = None,
) -> FitResult:
    """Fit the product's default model of a kind on x: make_config for x's shape, the kind's training
    settings, size-scaled epochs (times 3 with quality "high"). `hashae index` and `hashae bench`
    both train through here; `name` labels the progress task ("hashing model", "VAE"). `kind` may
    also name one of RECIPES (e.g. "seed"), a kind with other config fields."""
    if quality not in QUALITY_STEPS:
        raise ConfigError(f"unknown quality {quality!r}; known: {', '.join(QUALITY_STEPS)}")
    kind, fields = RECIPES.get(kind, (kind, {}))
    config = make_config(kind, input_shape=tuple(x.shape[1:]), code_size=code_size, **fields)
    train_config = with_epochs(train_config_for(kind, seed=seed, device=device), epochs, len(x), scale=QUALITY_STEPS[quality])
    return fit(config, x, train_config, report=report, name=name)


def held_out_ids(n_items: int, train_config: TrainConfig) -> torch.Tensor:
    """The trainer's held-out items (its validation split); all items when it holds none out."""
    ids = _split_ids(n_items, train_config)[1]
    return ids if len(ids) else torch.arange(n_items)


def noise_flip_share(model: Autoencoder, inputs: torch.Tensor, *, limit: int = 10000) -> float | None:
    """Share of bits flipped when the final training noise is injected at inference (None for
    models without that notion)."""
    flips = getattr(model, "noise_flip_share", None)
    return None if flips is None else round(flips(inputs[:limit]), 5)


def measure_codes(model: Autoencoder, inputs: torch.Tensor, *, limit: int = 10000) -> CodeStats | None:
    """Code statistics of the sigmoid code layer of a binary-code model (None for the others):
    measured on `inputs` (fit passes the held-out split)."""
    if not model.binary_codes:
        return None
    sample = inputs[:limit]
    if hasattr(model, "code_activations"):
        return code_stats(torch.cat([model.code_activations(chunk) for chunk in sample.split(1024)]).numpy())
    with torch.no_grad():
        z = torch.cat([model.encode_pre(model.normalise(chunk)) for chunk in sample.split(1024)])
    # centred on the calibrated thresholds, so the stats' bits (activation > 0.5) are the model's bits
    return code_stats(torch.sigmoid(z[:, : model.config.code_size] - model.bit_threshold).numpy())
