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
from hashae.neighbours import nearest
from hashae.trainer import History, TrainConfig, train, train_config_for
from hashae.variants import AEConfig, Autoencoder, create, make_config

# A training budget in optimiser steps: small folders get more epochs, large ones fewer.
DEFAULT_STEPS = 3500
MIN_EPOCHS, MAX_EPOCHS = 8, 200
QUALITY_STEPS = {"fast": 1.0, "high": 3.0}  # --quality high trains three times longer
# Label-free neighbour pairs for models that use them: k nearest items in PCA space of this many dims.
NEIGHBOURS_K, NEIGHBOURS_DIMS = 10, 64


def default_epochs(n_items: int, *, batch_size: int = TrainConfig.batch_size) -> int:
    """Epochs giving about DEFAULT_STEPS optimiser steps, clamped to [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_items / batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(DEFAULT_STEPS / steps_per_epoch))))


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

    def summary(self) -> dict[str, Any]:
        """Kind, epochs, seconds, the best epoch's loss terms and the code statistics, JSON-ready."""
        out: dict[str, Any] = {
            "kind": self.model.config.kind,
            "epochs": len(self.history.epochs),
            "seconds": round(self.history.seconds, 2),
            "final": {k: round(v, 4) for k, v in self.history.final.items()},
        }
        if self.stats is not None:
            out["code_stats"] = self.stats.as_dict()
        return out


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
            pairs = nearest(x, k=NEIGHBOURS_K, dims=NEIGHBOURS_DIMS, seed=train_config.seed)
            finding.advance(len(x))
        extra_seconds = time.perf_counter() - started
    history = train(model, x, train_config, report=report, name=name, pairs=pairs if model.uses_pairs else None)
    history.seconds += extra_seconds
    model.cpu()
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    model.calibrate(inputs, seed=train_config.seed)
    return FitResult(model=model, history=history, stats=measure_codes(model, inputs))


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
    both train through here; `name` labels the progress task ("hashing model", "VAE")."""
    if quality not in QUALITY_STEPS:
        raise ConfigError(f"unknown quality {quality!r}; known: {', '.join(QUALITY_STEPS)}")
    config = make_config(kind, input_shape=tuple(x.shape[1:]), code_size=code_size)
    train_config = with_epochs(train_config_for(kind, seed=seed, device=device), epochs, len(x), scale=QUALITY_STEPS[quality])
    return fit(config, x, train_config, report=report, name=name)


def measure_codes(model: Autoencoder, inputs: torch.Tensor, *, limit: int = 10000) -> CodeStats | None:
    """Code statistics of the sigmoid code layer of a binary-code model (None for the others)."""
    if not model.binary_codes:
        return None
    sample = inputs[:limit]
    with torch.no_grad():
        z = torch.cat([model.encode_pre(model.normalise(chunk)) for chunk in sample.split(1024)])
    # centred on the calibrated thresholds, so the stats' bits (activation > 0.5) are the model's bits
    return code_stats(torch.sigmoid(z[:, : model.config.code_size] - model.bit_threshold).numpy())
