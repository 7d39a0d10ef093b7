"""What the bench measures and on which split (the protocol of benchmarks/BENCHMARK.md).

Split: Fashion-MNIST's 60,000 train images are the database and training set; the queries are test
images numpy.random.default_rng(0).choice(10000, n_queries, replace=False). For a labelled folder,
rng(0) holds out the queries and the rest is the database. Models and hash functions are fitted on
the database only, never on the queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashae.baselines import METHODS as BASELINES
from hashae.datasets import ArrayDataset, load_fashion_mnist, load_source
from hashae.errors import ConfigError, DataError

VARIANTS = ("linear", "undercomplete", "sparse", "denoising", "contractive")
FLOATS = ("vae", "pixels")
RECIPES = ("seed",)  # hashae.recipes.RECIPES: the seed's plain noisy-sigmoid recipe
ALL_METHODS = (*BASELINES, "hashing", *RECIPES, "hybrid", *VARIANTS, *FLOATS)


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


def flat(x: np.ndarray) -> np.ndarray:
    """Images (n, C, H, W) as float32 rows (n, C*H*W)."""
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
