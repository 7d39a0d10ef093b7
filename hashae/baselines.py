"""The classic hash functions the learned codes are measured against: LSH, PCAH and ITQ through FAISS,
and two learned peers implemented here from their papers, AGH and SGH.

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
- agh: Anchor Graph Hashing, one layer (Liu, Wang, Kumar, Chang, "Hashing with Graphs", ICML 2011).
  m = 300 anchors by k-means (faiss.Kmeans, seeded); each item's row z(x) of the truncated anchor
  graph keeps its s = 2 nearest anchors with weights exp(-d^2 / t), normalised to sum 1, t the
  mean squared distance to the s-th nearest anchor; with Lambda = diag(Z^T 1) the r eigenvectors V
  of M = Lambda^-1/2 Z^T Z Lambda^-1/2 after the trivial one, eigenvalues S, give the projection
  W = sqrt(n) Lambda^-1/2 V S^-1/2 (m, r); bit j = z(x) W_j >= 0 (the paper's out-of-sample rule).
- sgh: Stochastic Generative Hashing, linear (Dai, Guo, Kumar, He, Song, ICML 2017): an encoder
  q(h|x) = Bernoulli(sigmoid(W^T (x - mean) + b)) and a linear Gaussian decoder
  x ~ N(U h + c, sigma^2 I) with sigma learned,
  trained on the minimum-description-length objective (reconstruction error plus the KL divergence
  of q from the uniform bit prior) with binary stochastic neurons h = [sigmoid(.) > u], u ~ U(0, 1),
  whose gradient is the paper's distributional derivative (the sigmoid's gradient passed through
  the sample); bit j = sigmoid(.) >= 1/2, i.e. projection j >= 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from typing import Protocol

from hashae.codes import check_nbits, pack_bits
from hashae.errors import ConfigError, DataError

ENCODE_BATCH_ROWS = 16384  # rows projected at a time: bounds FAISS's temporary copies


class Projection(Protocol):
    """A fitted projection step: FAISS's VectorTransform or one of this module's own."""

    def apply(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class HashFunction:
    """A fitted hash function: encode(x) gives canonical packed codes uint8 (n, nbits // 8)."""

    method: str
    nbits: int
    dim: int
    transforms: Sequence[Projection]

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


AGH_ANCHORS, AGH_NEAREST = 300, 2
KMEANS_ITERATIONS = 20


@dataclass(frozen=True, eq=False)
class AnchorGraphProjection:
    """AGH's out-of-sample projection: the truncated anchor-graph row z(x) (n, m) times W (m, r)."""

    anchors: np.ndarray  # (m, d) float32
    bandwidth: float  # t of exp(-d^2 / t)
    weights: np.ndarray  # (m, r) float32
    nearest: int = AGH_NEAREST

    def graph_rows(self, x: np.ndarray) -> np.ndarray:
        """Z (n, m): each row the normalised kernel weights of its `nearest` anchors, zeros elsewhere."""
        index = faiss.IndexFlatL2(self.anchors.shape[1])
        index.add(self.anchors)
        distances, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), self.nearest)  # (n, s)
        kernel = np.exp(-(distances - distances[:, :1]) / self.bandwidth)  # shifted: same ratios, no underflow
        kernel /= kernel.sum(axis=1, keepdims=True)
        rows = np.zeros((len(x), len(self.anchors)), dtype=np.float32)
        np.put_along_axis(rows, ids, kernel.astype(np.float32), axis=1)
        return rows

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.graph_rows(x) @ self.weights  # (n, r)


@dataclass(frozen=True, eq=False)
class AffineProjection:
    """(x - mean) @ weights + bias: SGH's encoder pre-activation, its sign the bit."""

    mean: np.ndarray  # (d,)
    weights: np.ndarray  # (d, r)
    bias: np.ndarray  # (r,)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.weights + self.bias).astype(np.float32)


def _fit_agh(x: np.ndarray, nbits: int, seed: int) -> list[Projection]:
    anchors_count = min(AGH_ANCHORS, len(x))
    if nbits >= anchors_count:
        raise ConfigError(f"agh gives fewer bits than anchors ({anchors_count}), asked for {nbits}: use more training data")
    # min_points_per_centroid=1: small training sets are fine here (FAISS would print a warning)
    kmeans = faiss.Kmeans(x.shape[1], anchors_count, niter=KMEANS_ITERATIONS, seed=seed, min_points_per_centroid=1)
    kmeans.train(x)
    anchors = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(anchors)
    distances, _ = index.search(x, AGH_NEAREST)
    bandwidth = max(float(distances[:, -1].mean()), 1e-12)
    unweighted = AnchorGraphProjection(anchors, bandwidth, np.zeros((anchors_count, 0), np.float32))
    z = unweighted.graph_rows(x).astype(np.float64)  # (n, m)
    degree = np.maximum(z.sum(axis=0), 1e-12)  # Lambda's diagonal (m,)
    scaled = z / np.sqrt(degree)
    values, vectors = np.linalg.eigh(scaled.T @ scaled)  # ascending; the largest (1) is the trivial one
    order = np.argsort(values)[::-1][1 : nbits + 1]
    values, vectors = np.maximum(values[order], 1e-12), vectors[:, order]
    weights = np.sqrt(len(x)) * vectors / np.sqrt(degree)[:, None] / np.sqrt(values)[None, :]
    return [AnchorGraphProjection(anchors, bandwidth, weights.astype(np.float32))]


SGH_EPOCHS, SGH_BATCH, SGH_LR = 30, 256, 1e-3


def _fit_sgh(x: np.ndarray, nbits: int, seed: int) -> list[Projection]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    mean = x.mean(axis=0)
    data = torch.from_numpy(np.ascontiguousarray(x - mean, dtype=np.float32))  # (n, d)
    d = data.shape[1]
    encoder_w = torch.nn.Parameter(0.01 * torch.randn(d, nbits, generator=generator))
    encoder_b = torch.nn.Parameter(torch.zeros(nbits))
    decoder_u = torch.nn.Parameter(0.01 * torch.randn(nbits, d, generator=generator))
    decoder_c = torch.nn.Parameter(torch.zeros(d))
    log_variance = torch.nn.Parameter(torch.zeros(()))  # the decoder's noise variance, learned
    optimizer = torch.optim.Adam([encoder_w, encoder_b, decoder_u, decoder_c, log_variance], lr=SGH_LR)
    for _ in range(SGH_EPOCHS):
        for rows in torch.randperm(len(data), generator=generator).split(SGH_BATCH):
            batch = data[rows]
            q = torch.sigmoid(batch @ encoder_w + encoder_b)  # (B, r)
            sample = (q > torch.rand(q.shape, generator=generator)).to(q.dtype)
            h = q + (sample - q).detach()  # binary stochastic neuron, gradient through the sigmoid
            squared_error = (batch - h @ decoder_u - decoder_c).pow(2).sum(1).mean()
            reconstruction = 0.5 * squared_error / log_variance.exp() + 0.5 * d * log_variance
            q = q.clamp(1e-6, 1 - 1e-6)
            kl_to_fair_bits = (q * q.log() + (1 - q) * (1 - q).log() + np.log(2.0)).sum(1).mean()
            optimizer.zero_grad()
            (reconstruction + kl_to_fair_bits).backward()
            optimizer.step()
    return [AffineProjection(mean.astype(np.float32), encoder_w.detach().numpy().copy(), encoder_b.detach().numpy().copy())]


# method -> (fitter, needs nbits <= input dimension)
_FITTERS: dict[str, tuple[Callable[[np.ndarray, int, int], list[faiss.VectorTransform]], bool]] = {
    "lsh": (_fit_lsh, False),
    "pcah": (_fit_pcah, True),
    "itq": (_fit_itq, True),
    "agh": (_fit_agh, False),
    "sgh": (_fit_sgh, False),
}
METHODS = tuple(_FITTERS)


def fit_hash(method: str, x_train: np.ndarray, *, nbits: int, seed: int = 0) -> HashFunction:
    """Fit a hash function ("lsh", "pcah", "itq", "agh" or "sgh") of nbits bits on float vectors (n, d).

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
