"""Fitting a model end to end (normalise, train, calibrate, measure) and the product's default recipes.

Everything that trains a model (`hashae train`, `hashae index`, `hashae bench`) goes through `fit`, so
the defaults that win the bench are the defaults users get.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from hashae.codes import CodeStats, code_stats
from hashae.neighbours import nearest
from hashae.trainer import History, TrainConfig, train
from hashae.variants import AEConfig, Autoencoder, create, make_config

# A training budget in optimiser steps: small folders get more epochs, large ones fewer.
DEFAULT_STEPS = 3500
MIN_EPOCHS, MAX_EPOCHS = 8, 200
# Label-free neighbour pairs for models that use them: k nearest items in PCA space of this many dims.
NEIGHBOURS_K, NEIGHBOURS_DIMS = 10, 64


def default_epochs(n_items: int, *, batch_size: int = TrainConfig.batch_size) -> int:
    """Epochs giving about DEFAULT_STEPS optimiser steps, clamped to [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(n_items / batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(DEFAULT_STEPS / steps_per_epoch))))


# The product's hashing recipe (benchmarks/tune_hashing.py, Fashion-MNIST, see the table in its
# report): hard 0/1 codes from the first step (straight-through gradient) on batch-standardised code
# units, so no bit saturates and dies and bits stay balanced, instead of the seed's noise ramp (which
# collapsed to near-constant codes within a short budget), plus a contrastive term that makes each
# item's code agree with that of one of its label-free PCA neighbours against the rest of the batch,
# on relaxed codes sharpened towards the sign bits over training (sharpen: 0.7205 -> 0.7318 at 32
# bits, 0.7365 -> 0.7443 at 64), with the neighbour shifted by up to a pixel (images only), and a
# term that decorrelates the code units over the batch, for codes of DECORRELATE_FROM_BITS or more
# (Fashion-MNIST 64 bits 0.7485 / 0.7480 -> 0.7539 / 0.7521, seeds 0 / 1; 32 bits 0.7398 -> 0.7400,
# 16 bits 0.7077 -> 0.7065; the 32-bit colour folder 0.573 -> 0.554: it pays only on long codes).
HASHING_DEFAULTS: dict[str, Any] = {
    "hidden": (1024,),  # one wide hidden layer: 0.7205 mAP@1000 at 32 bits vs 0.7153 for (512, 256), +30% time
    "noise_max": 0.0,
    "hard_phase": 1.0,
    "code_norm": True,
    "decorrelation": 1000.0,
    "consistency": 50.0,
    "consistency_kind": "infonce",
    "temperature": 0.3,
    "sharpen": 8.0,
    "pair_shift": 1,  # dropped for vectors by default_config
}
# Its optimisation: a 3x higher peak learning rate than the trainer's default (onecycle, Adam):
# mAP@1000 at 64 bits 0.7443 / 0.7456 (seeds 0 / 1) -> 0.7485 / 0.7480, at 32 bits 0.7374 -> 0.7398.
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {"hashing": {"lr": 6e-3}}
DECORRELATE_FROM_BITS = 64


def default_config(kind: str, *, input_shape: tuple[int, ...], code_size: int, **overrides: Any) -> AEConfig:
    """The product's default config of a kind for data of this shape. Vectors (1-D inputs) get MSE
    on standardised features; images keep BCE on [0, 1] pixels. Hashing gets HASHING_DEFAULTS
    (its decorrelation term only on codes of DECORRELATE_FROM_BITS bits or more)."""
    fields: dict[str, Any] = {"input_shape": tuple(input_shape), "code_size": code_size}
    if kind == "hashing":
        fields.update(HASHING_DEFAULTS)
        if code_size < DECORRELATE_FROM_BITS:
            fields["decorrelation"] = 0.0
    if len(input_shape) != 3:
        fields.pop("pair_shift", None)  # translation needs (C, H, W) images
    if len(input_shape) == 1:
        fields["recon_loss"] = "mse"
        if kind in ("hashing", "denoising"):
            fields["corruption"] = {"kind": "gaussian", "strength": 0.2}
    fields.update(overrides)
    return make_config(kind, **fields)


def default_train_config(kind: str, **fields: Any) -> TrainConfig:
    """The product's optimisation settings for a kind (TRAIN_DEFAULTS over TrainConfig's), with
    `fields` (seed, device, ...) on top; a field given as None keeps the default."""
    return TrainConfig(**{**TRAIN_DEFAULTS.get(kind, {}), **{k: v for k, v in fields.items() if v is not None}})


@dataclass
class FitResult:
    """A trained, calibrated model with its history; code statistics when it makes binary codes."""

    model: Autoencoder
    history: History
    stats: CodeStats | None

    def summary(self) -> dict[str, Any]:
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
    show_progress: bool = True,
    pairs: np.ndarray | None = None,
) -> FitResult:
    """Build, normalise, train and calibrate a model on x (n, *input_shape) float32.

    A model that uses neighbour pairs gets them computed here without labels (hashae.neighbours,
    PCA + exact k-NN, counted in the history's seconds) unless `pairs` is given."""
    torch.manual_seed(train_config.seed)  # the initial weights too: same seed, same model
    model = create(config)
    model.fit_normalisation(x)
    extra_seconds = 0.0
    if model.uses_pairs and pairs is None:
        started = time.perf_counter()
        pairs = nearest(x, k=NEIGHBOURS_K, dims=NEIGHBOURS_DIMS, seed=train_config.seed)
        extra_seconds = time.perf_counter() - started
    history = train(model, x, train_config, show_progress=show_progress, pairs=pairs if model.uses_pairs else None)
    history.seconds += extra_seconds
    model.cpu()
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    model.calibrate(inputs, seed=train_config.seed)
    return FitResult(model=model, history=history, stats=measure_codes(model, inputs))


def measure_codes(model: Autoencoder, inputs: torch.Tensor, *, limit: int = 10000) -> CodeStats | None:
    """Code statistics of the sigmoid code layer of a binary-code model (None for the others)."""
    if not model.binary_codes:
        return None
    sample = inputs[:limit]
    with torch.no_grad():
        z = torch.cat([model.encode_pre(model.normalise(chunk)) for chunk in sample.split(1024)])
    # centred on the calibrated thresholds, so the stats' bits (activation > 0.5) are the model's bits
    return code_stats(torch.sigmoid(z[:, : model.config.code_size] - model.bit_threshold).numpy())


def with_epochs(train_config: TrainConfig, epochs: int | None, n_items: int, *, scale: float = 1.0) -> TrainConfig:
    """train_config with the given epochs, or the size-scaled default (times `scale`) when None."""
    default = max(1, round(default_epochs(n_items, batch_size=train_config.batch_size) * scale))
    return replace(train_config, epochs=epochs or default)


# The store's two models: the hashing autoencoder (binary codes) and the VAE (float latent).
STORE_MODELS = {"hashing": "hashing", "latent": "vae"}
QUALITY_STEPS = {"fast": 1.0, "high": 3.0}  # --quality high trains three times longer


def fit_default(
    kind: str,
    x: np.ndarray,
    *,
    code_size: int,
    epochs: int | None = None,
    quality: str = "fast",
    seed: int = 0,
    device: str = "auto",
    show_progress: bool = True,
) -> FitResult:
    """Fit the product's default model of a kind on x: default config, size-scaled epochs
    (times 3 with quality "high"). `hashae index` and `hashae bench` both train through here."""
    from hashae.errors import ConfigError

    if quality not in QUALITY_STEPS:
        raise ConfigError(f"unknown quality {quality!r}; known: {', '.join(QUALITY_STEPS)}")
    config = default_config(kind, input_shape=tuple(x.shape[1:]), code_size=code_size)
    train_config = with_epochs(default_train_config(kind, seed=seed, device=device), epochs, len(x), scale=QUALITY_STEPS[quality])
    return fit(config, x, train_config, show_progress=show_progress)


def train_store_models(x: np.ndarray, *, bits: int, latent_dim: int, **options: Any) -> dict[str, FitResult]:
    """Train the hashing autoencoder and the VAE that `hashae index` stores (options as fit_default)."""
    sizes = {"hashing": bits, "latent": latent_dim}
    return {role: fit_default(kind, x, code_size=sizes[role], **options) for role, kind in STORE_MODELS.items()}
