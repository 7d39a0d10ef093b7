"""Label-free neighbour pairs for training: each item's k nearest neighbours in a cheap feature space.

Computed once before training (PCA of the flattened inputs, exact FAISS flat L2 search), then
handed to the trainer as `pairs`, so a model can pull the codes of near-duplicates together. Labels
are never used.
"""

from __future__ import annotations

import numpy as np

from hashae.errors import ConfigError


def pca_features(x: np.ndarray, *, dims: int = 64, limit: int = 20000, seed: int = 0) -> np.ndarray:
    """Inputs (n, ...) flattened, centred and projected on their top `dims` principal axes, float32.

    The axes come from at most `limit` items (a seeded sample), enough for a stable subspace."""
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    rng = np.random.default_rng(seed)
    sample = flat if len(flat) <= limit else flat[rng.choice(len(flat), limit, replace=False)]
    mean = sample.mean(axis=0)
    centred = sample - mean
    cov = centred.T.astype(np.float64) @ centred / max(len(sample) - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    dims = min(dims, flat.shape[1])
    axes = eigvecs[:, ::-1][:, :dims].astype(np.float32)  # (d_in, dims), largest variance first
    return np.ascontiguousarray((flat - mean) @ axes, dtype=np.float32)


def nearest(x: np.ndarray, *, k: int = 10, dims: int = 64, seed: int = 0) -> np.ndarray:
    """Indices (n, k) int64 of each item's k nearest other items by L2 in PCA-`dims` space.

    The item itself is excluded (also when it has exact duplicates, the duplicates are kept)."""
    import faiss

    n = len(x)
    if n < 2:
        raise ConfigError(f"need at least 2 items to find neighbours, got {n}")
    k = min(k, n - 1)
    features = pca_features(x, dims=dims, seed=seed)
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    _, ids = index.search(features, k + 1)  # (n, k + 1), usually the item itself first
    own = np.arange(n)[:, None]
    keep = ids != own
    # drop the item itself where found; otherwise drop the last (farthest) column
    keep[keep.all(axis=1), -1] = False
    return np.ascontiguousarray(ids[keep].reshape(n, k), dtype=np.int64)
