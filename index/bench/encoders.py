"""The bench's models, trained as `hashae index` trains them (hashae.recipes.fit_default), saved as
checkpoint folders and encoded by the product's numpy encoder stage (index/encoder.py): the codes
and latents measured are the ones a user's store would hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashae.events import Reporter
from hashae.index.encoder import EncoderStage
from hashae.inference import InferenceEncoder

ENCODE_CHUNK = 4096  # images per encoder call


@dataclass
class TrainedEncoder:
    """A trained model's numpy encoder and how long training took."""

    encoder: InferenceEncoder
    train_s: float
    folder: Path
    code_stats: dict | None = None  # FitResult's code statistics (saturation, flips, balance, entropy)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Packed codes uint8 (n, bits/8) of images (n, C, H, W), each bit decided as the encoder
        stage decides a store's (the stage's latents, here the same model's, are not used)."""
        stage = EncoderStage(self.encoder, self.encoder)
        return np.concatenate([stage.encode(x[i : i + ENCODE_CHUNK])[0] for i in range(0, len(x), ENCODE_CHUNK)])

    def latents(self, x: np.ndarray) -> np.ndarray:
        """Embeddings float32 (n, d) of images (n, C, H, W): the VAE mean for a VAE, as the encoder
        stage computes a store's latents."""
        return np.concatenate([self.encoder.embed(x[i : i + ENCODE_CHUNK]) for i in range(0, len(x), ENCODE_CHUNK)])


def train_encoder(
    kind: str,
    x: np.ndarray,
    *,
    code_size: int,
    folder: Path,
    epochs: int | None,
    quality: str,
    seed: int,
    report: Reporter | None = None,
) -> TrainedEncoder:
    """Fit the product's default model of a kind on x, save its checkpoint under folder, load it back."""
    from hashae import checkpoint
    from hashae.recipes import fit_default

    name = f"{kind} ({code_size}) on {len(x)} items"
    fitted = fit_default(kind, x, code_size=code_size, epochs=epochs, quality=quality, seed=seed, report=report, name=name)
    directory = checkpoint.save(fitted.model, Path(folder) / f"{kind}-{code_size}")
    code_stats = fitted.summary().get("code_stats")
    return TrainedEncoder(InferenceEncoder.load(directory), fitted.history.seconds, directory, code_stats)
