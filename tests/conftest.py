"""Shared fixtures: a small real Fashion-MNIST sample, and seeded helpers to build and train models.

The sample is read straight from Debian's dataset files with gzip + numpy (no dependency on
hashae.data), so the learning-core tests stay independent of the reader. Tests that need it are
skipped cleanly when the files are absent (`make data` installs them).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from hashae import trainer, variants

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_TRAIN_IMAGES = FASHION_DIR / "train-images-idx3-ubyte.gz"
N_TRAIN, N_HELDOUT = 2000, 500


def read_idx_images(path: Path, n: int) -> np.ndarray:
    """The first n images of an IDX3 file as float32 (n, 1, rows, cols) in [0, 1]."""
    with gzip.open(path, "rb") as handle:
        header = np.frombuffer(handle.read(16), dtype=">i4")
        magic, count, rows, cols = (int(v) for v in header)
        if magic != 2051 or count < n:
            raise ValueError(f"{path}: not an IDX3 image file with at least {n} images")
        pixels = np.frombuffer(handle.read(n * rows * cols), dtype=np.uint8)
    return (pixels.reshape(n, 1, rows, cols) / np.float32(255)).astype(np.float32)


@pytest.fixture(scope="session")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the first 2,000 and the next 500 Fashion-MNIST training images,
    float32 (n, 1, 28, 28) in [0, 1]. The file is already shuffled, so the slices are mixed.
    Shared by the whole session: never modify them in place."""
    if not FASHION_TRAIN_IMAGES.is_file():
        pytest.skip(f"Fashion-MNIST not installed ({FASHION_TRAIN_IMAGES}); run `make data`")
    images = read_idx_images(FASHION_TRAIN_IMAGES, N_TRAIN + N_HELDOUT)
    return images[:N_TRAIN], images[N_TRAIN:]


@pytest.fixture(scope="session")
def build_model() -> Callable[..., variants.Autoencoder]:
    """build_model(kind, seed=0, **fields): a freshly initialised model, its weights fixed by the seed."""

    def build(kind: str, *, seed: int = 0, **fields: Any) -> variants.Autoencoder:
        torch.manual_seed(seed)
        return variants.create(variants.make_config(kind, **fields))

    return build


@pytest.fixture(scope="session")
def fit_model() -> Callable[..., trainer.History]:
    """fit_model(model, x, epochs=..., **train_config): normalise, then train quietly (no
    validation split unless asked). Small batches and a brisk learning rate suit the tiny samples."""

    def fit(model: variants.Autoencoder, x: np.ndarray, *, epochs: int, **overrides: Any) -> trainer.History:
        settings = {"batch_size": 64, "lr": 5e-3, "val_fraction": 0.0, "seed": 0, "device": "cpu", **overrides}
        model.fit_normalisation(x)
        return trainer.train(model, x, trainer.TrainConfig(epochs=epochs, **settings), show_progress=False)

    return fit
