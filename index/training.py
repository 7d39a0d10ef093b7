"""The store's model pair: a hashing autoencoder (the binary codes) and a VAE (the latents), trained
together on a folder's decoded images and saved as checkpoint folders in the store.

Both train through hashae.recipes.fit_default, the product's default recipe for each kind, so
`hashae index` trains exactly what `hashae train --variant hashing` / `--variant vae` would. torch is
imported only when training runs (importing this module costs nothing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashae.events import Reporter

MAX_TRAIN_ITEMS = 100_000  # training sample cap for very large folders; the rest is only encoded
ROLES = {  # store role -> (model kind, what its progress task is called)
    "hashing": ("hashing", "hashing model"),
    "latent": ("vae", "VAE"),
}


@dataclass(frozen=True)
class TrainingOptions:
    """How to train the pair: epochs None scales them to the sample size; quality fast or high;
    nproc: training processes (torch DDP through hashae.distributed; 1 trains here)."""

    epochs: int | None = None
    quality: str = "fast"
    seed: int = 0
    device: str = "auto"
    nproc: int = 1


@dataclass(frozen=True)
class TrainedModel:
    """One trained model of the pair: its saved checkpoint folder, kind and training summary."""

    role: str
    kind: str
    folder: Path
    summary: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What WriteTransaction.add_models takes for this model."""
        return {"dir": self.folder, "kind": self.kind, "info": self.summary}


def sample_positions(count: int, *, seed: int, limit: int = MAX_TRAIN_ITEMS) -> np.ndarray:
    """Sorted positions of the items to train on: all of them, or `limit` drawn with the seed."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def train_pair(
    x: np.ndarray,
    *,
    bits: int,
    latent_dim: int,
    models_dir: Path,
    options: TrainingOptions,
    report: Reporter | None = None,
) -> dict[str, TrainedModel]:
    """Train the hashing model (bits) and the VAE (latent_dim) on x float32 (n, C, H, W), save both
    under models_dir (not yet recorded in the store: WriteTransaction.add_models does that).

    Returns the two models by role ("hashing", "latent").
    """
    from hashae import checkpoint, distributed
    from hashae.recipes import fit_default

    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    sizes = {"hashing": bits, "latent": latent_dim}
    calls = [{"kind": ROLES[role][0], "name": ROLES[role][1], "code_size": size} for role, size in sizes.items()]
    shared = {"x": x, "epochs": options.epochs, "quality": options.quality, "seed": options.seed, "device": options.device}
    fits = distributed.run(  # both models in one group of processes when nproc > 1
        distributed.in_turn, args=(fit_default, calls), kwargs=shared, nproc=options.nproc, device=options.device, report=report
    )
    trained = {}
    for role, fit in zip(sizes, fits):
        summary = fit.summary()
        folder = checkpoint.save(fit.model, Path(models_dir) / f"{role}-{stamp}", info=summary)
        trained[role] = TrainedModel(role=role, kind=fit.model.config.kind, folder=folder, summary=summary)
    return trained


def training_summaries(trained: dict[str, TrainedModel]) -> dict[str, dict[str, Any]]:
    """The JSON-ready training summary of each role (for the index summary)."""
    return {role: model.summary for role, model in trained.items()}


def stack_pixels(batches: Sequence[np.ndarray]) -> np.ndarray:
    """Decoded batches' pixels as one float32 array (n, C, H, W)."""
    return np.concatenate(batches) if len(batches) > 1 else np.asarray(batches[0])
