"""The classic hash functions the learned codes are measured against: LSH, PCAH and ITQ, through FAISS.

Each method is a short chain of FAISS vector transforms fitted on the training data (the database,
never the queries), followed by the sign: bit j is 1 when projection j >= 0 (FAISS's own rule in
fvecs2bitvecs). The bits are packed with hashae.codes.pack_bits into the canonical layout; FAISS's
IndexLSH packs the first bit into the least significant end of a byte instead, which is why the
packing is not left to it.

- lsh: random hyperplanes through the data mean. faiss.CenteringTransform (the training mean), then
  faiss.RandomRotationMatrix(d, nbits) seeded with `seed`: nbits random Gaussian directions,
  orthonormalised. Not faiss.IndexLSH: its rotation seed is fixed (5), and its trained thresholds
  put each hyperplane through the median of the projections, not through the mean (untrained, through
  the origin).
- pcah: faiss.PCAMatrix(d, nbits): centred on the training mean, the top nbits principal directions.
  Deterministic; `seed` is unused.
- itq: faiss.ITQTransform(d, nbits, do_pca=True): centring, L2 normalisation, PCA to nbits, then
  the ITQ rotation (50 iterations from a random rotation seeded with `seed`). FAISS fits it on at
  most max(10 d, 32768) training vectors, a subsample it draws with its own fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from hashae.codes import check_nbits, pack_bits
from hashae.errors import ConfigError, DataError

ENCODE_BATCH_ROWS = 16384  # rows projected at a time: bounds FAISS's temporary copies


@dataclass(frozen=True, eq=False)
class HashFunction:
    """A fitted hash function: encode(x) gives canonical packed codes uint8 (n, nbits // 8)."""

    method: str
    nbits: int
    dim: int
    transforms: Sequence[faiss.VectorTransform]

    def project(self, x: np.ndarray) -> np.ndarray:
        """The real-valued projections (n, nbits) float32 whose signs are the bits."""
        x = _as_float32_rows(x, dim=self.dim)
        projections = np.empty((len(x), self.nbits), dtype=np.float32)
        for start in range(0, len(x), ENCODE_BATCH_ROWS):
            batch = x[start : start + ENCODE_BATCH_ROWS]
            for transform in self.transforms:
                batch = transform.apply(batch)
            projections[start : start + len(batch)] = batch
        return projections

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Packed codes uint8 (n, nbits // 8) of float vectors x (n, dim): bit j = projection j >= 0."""
        return pack_bits(self.project(x) >= 0)


def _as_float32_rows(x: np.ndarray, *, dim: int | None = None) -> np.ndarray:
    """x as a C-contiguous float32 (n, d) array; refuses non-float data (unscaled uint8 pixels are a bug)."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"expected float vectors (n, d), got {x.dtype} of shape {x.shape}: scale pixels to [0, 1]"
        )
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"this hash function takes {dim}-dimensional vectors, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise DataError("vectors contain NaN or infinity: clean the input first")
    return np.ascontiguousarray(x, dtype=np.float32)


def _fit_lsh(x: np.ndarray, nbits: int, seed: int) -> list[faiss.VectorTransform]:
    centering = faiss.CenteringTransform(x.shape[1])
    centering.train(x)
    rotation = faiss.RandomRotationMatrix(x.shape[1], nbits)
    rotation.init(seed)
    return [centering, rotation]


def _fit_pcah(x: np.ndarray, nbits: int, seed: int) -> list[faiss.VectorTransform]:
    pca = faiss.PCAMatrix(x.shape[1], nbits)
    pca.train(x)
    return [pca]


def _fit_itq(x: np.ndarray, nbits: int, seed: int) -> list[faiss.VectorTransform]:
    itq = faiss.ITQTransform(x.shape[1], nbits, True)
    itq.itq.seed = seed
    itq.train(x)
    return [itq]


# method -> (fitter, needs nbits <= input dimension)
_FITTERS: dict[str, tuple[Callable[[np.ndarray, int, int], list[faiss.VectorTransform]], bool]] = {
    "lsh": (_fit_lsh, False),
    "pcah": (_fit_pcah, True),
    "itq": (_fit_itq, True),
}
METHODS = tuple(_FITTERS)


def fit_hash(method: str, x_train: np.ndarray, *, nbits: int, seed: int = 0) -> HashFunction:
    """Fit a classic hash function ("lsh", "pcah" or "itq") of nbits bits on float vectors (n, d).

    Deterministic given seed. Raises ConfigError for an unknown method or a bad nbits, DataError for
    unusable training data.
    """
    if method not in _FITTERS:
        raise ConfigError(f"unknown hash method {method!r}; known methods: {', '.join(METHODS)}")
    nbits = check_nbits(nbits)
    x_train = _as_float32_rows(x_train)
    n, dim = x_train.shape
    fitter, bits_within_dim = _FITTERS[method]
    if bits_within_dim and nbits > dim:
        raise ConfigError(
            f"{method} gives at most one bit per input dimension ({dim}), asked for {nbits} bits"
        )
    if n < 2:
        raise DataError(f"{method} needs at least 2 training vectors, got {n}")
    transforms = tuple(fitter(x_train, nbits, int(seed)))
    return HashFunction(method=method, nbits=nbits, dim=dim, transforms=transforms)
