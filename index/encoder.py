"""The encoder stage: decoded images -> packed binary codes (hashing model) and latents (VAE mean).

numpy only (hashae.inference.InferenceEncoder on the two checkpoints): torch is never imported, so
indexing workers and query processes start fast. Indexing and querying both encode through here.

Codes do not depend on the batch. A float32 matrix product rounds a row differently depending on
the rows beside it (BLAS picks kernels and tiles by shape and position), so a code unit lying a
hair from its threshold could flip between a batched encode and the same file encoded alone (issue
14: Bag/test_04816.png, 4e-8 from its threshold). encode() therefore decides each bit in three
steps, each exact for the bits it decides:

  1. float32, the whole batch: bits further than CODE_MARGIN from their threshold. Batch shapes
     move a unit by a few 1e-6 at most (3.8e-6 measured over Fashion-MNIST, units up to +-15);
     CODE_MARGIN is ~250x that, so no arithmetic order can move these bits across.
  2. float64, the rows with a unit inside the margin (about 1% of rows): bits further than
     FLOAT64_MARGIN from their threshold (float64 rounding is ~1e-14 here).
  3. float64, each remaining row alone (never seen in practice): the same arithmetic every time.

So a file gets the same code in any batch, from any executor, and when it is queried alone. The
cost: 1.2% of the Fashion-MNIST test images go through step 2, and encoding takes 8% more CPU
(30.9 against 28.7 us per image). Latents are float32 from one batched pass: an image encoded
alone gets its latent to ~1e-6, which ranks the same.

    stage = EncoderStage.load(hashing_dir, latent_dir)
    codes, latents = stage.encode(pixels)       # uint8 (n, bits/8), float32 (n, latent_dim)
    encoded = stage.encode_batch(decoded)       # a hashae.reader.DecodedBatch -> EncodedBatch
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashae.codes import pack_bits
from hashae.errors import CheckpointError
from hashae.folders import Skipped
from hashae.inference import InferenceEncoder
from hashae.reader import DecodedBatch, FileRecord, Shard, ShardReader

CODE_MARGIN = 1e-3  # float32 bits this close to their threshold are decided in float64
CODE_MARGIN_RELATIVE = 1e-4  # ... plus this fraction of the unit's magnitude
FLOAT64_MARGIN = 1e-9  # float64 bits this close are decided row by row
ROWS_PER_PRODUCT = 256  # rows per matrix product: faster than 1024 (its hidden layer spills the cache)


@dataclass(frozen=True, eq=False)
class EncodedBatch:
    """A decoded batch's files with their codes and latents, and the files it could not use.

    codes: uint8 (n, bits/8), latents: float32 (n, latent_dim), row i those of files[i].
    """

    files: tuple[FileRecord, ...]
    skipped: tuple[Skipped, ...]
    codes: np.ndarray
    latents: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


class EncoderStage:
    """The store's two models as one numpy encoder: codes from the hashing model, latents from the VAE."""

    def __init__(self, hashing: InferenceEncoder, latent: InferenceEncoder) -> None:
        if hashing.input_shape != latent.input_shape:
            raise CheckpointError(
                f"the hashing model takes {hashing.input_shape} inputs but the VAE {latent.input_shape}; "
                "retrain the pair (hashae index FOLDER --retrain)"
            )
        self.hashing, self.latent = hashing, latent
        self._hashing64: InferenceEncoder | None = None  # made on first need

    @classmethod
    def load(cls, hashing_dir: str | os.PathLike, latent_dir: str | os.PathLike) -> EncoderStage:
        """The stage of two checkpoint folders (CheckpointError if either cannot be used)."""
        return cls(InferenceEncoder.load(Path(hashing_dir)), InferenceEncoder.load(Path(latent_dir)))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, image_size, image_size) of the images both models take."""
        return tuple(self.hashing.input_shape)

    @property
    def bits(self) -> int:
        return self.hashing.code_size

    @property
    def latent_dim(self) -> int:
        return self.latent.code_size

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes uint8 (n, bits/8) and latents float32 (n, latent_dim) of pixels float32 (n, C, H, W).

        A row's code is the same whatever else is in the batch (see the module docstring).
        """
        pixels = np.asarray(pixels, dtype=np.float32)
        codes = np.empty((len(pixels), self.bits // 8), np.uint8)
        latents = np.empty((len(pixels), self.latent_dim), np.float32)
        for start in range(0, len(pixels), ROWS_PER_PRODUCT):  # the hidden layers stay in cache
            block = pixels[start : start + ROWS_PER_PRODUCT]
            codes[start : start + len(block)] = pack_bits(self._code_bits(block))
            latents[start : start + len(block)] = self.latent.embed(block)
        return codes, latents

    def encode_batch(self, batch: DecodedBatch) -> EncodedBatch:
        """A decoded batch's codes and latents, with its files and skipped files."""
        codes, latents = self.encode(batch.pixels)
        return EncodedBatch(files=batch.files, skipped=batch.skipped, codes=codes, latents=latents)

    def _code_bits(self, pixels: np.ndarray) -> np.ndarray:
        threshold = self.hashing.bit_threshold
        activation = self.hashing.bits_activation(self.hashing.pre_activation(pixels))  # float32 (n, bits)
        bits = activation > threshold
        unsure = np.abs(activation - threshold) > CODE_MARGIN + CODE_MARGIN_RELATIVE * np.abs(activation)
        rows = np.flatnonzero(~unsure.all(axis=1))
        if len(rows):
            exact = self._activation64(pixels[rows])  # float64 (k, bits)
            bits[rows] = exact > threshold
            for position in np.flatnonzero((np.abs(exact - threshold) <= FLOAT64_MARGIN).any(axis=1)):
                row = rows[position]
                bits[row] = self._activation64(pixels[row : row + 1])[0] > threshold
        return bits

    def _activation64(self, pixels: np.ndarray) -> np.ndarray:
        """The hashing model's code-unit activations computed in float64 (n, bits)."""
        if self._hashing64 is None:
            self._hashing64 = _float64_twin(self.hashing)
        return self._hashing64.bits_activation(self._hashing64.pre_activation(pixels))


def _float64_twin(encoder: InferenceEncoder) -> InferenceEncoder:
    """The same encoder with float64 weights: its pre_activation computes in float64."""
    twin = copy.copy(encoder)
    twin.params = {index: (weight.astype(np.float64), bias.astype(np.float64)) for index, (weight, bias) in encoder.params.items()}
    twin.input_mean = encoder.input_mean.astype(np.float64)
    twin.input_scale = encoder.input_scale.astype(np.float64)
    return twin


@functools.lru_cache(maxsize=4)
def loaded_stage(hashing_dir: str, latent_dir: str) -> EncoderStage:
    """EncoderStage.load, once per process for each pair of folders (executor workers reuse it)."""
    return EncoderStage.load(hashing_dir, latent_dir)


@dataclass(frozen=True)
class ShardEncoder:
    """Read a shard and encode it: one executor task (picklable; a worker process loads the
    models once, on its first task). Returns the shard as one EncodedBatch, pixels left behind."""

    reader: ShardReader
    hashing_dir: str
    latent_dir: str

    def __call__(self, shard: Shard) -> EncodedBatch:
        return loaded_stage(self.hashing_dir, self.latent_dir).encode_batch(self.reader(shard))


@dataclass(frozen=True)
class BatchEncoder:
    """Encode a batch decoded already (the training sample's): one executor task, picklable."""

    hashing_dir: str
    latent_dir: str

    def __call__(self, batch: DecodedBatch) -> EncodedBatch:
        return loaded_stage(self.hashing_dir, self.latent_dir).encode_batch(batch)
