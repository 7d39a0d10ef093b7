"""The one forward pass every variant shares, and what a trained model does (embed, bits, decode, sample).

A variant changes the pass only through small hooks (see hashae.variants):

    latent(z, progress)      how the code h is made from the encoder output z (noise, sampling)
    penalties(x_in, z, h)    extra named loss terms (sparsity, contraction, KL, bit balance, ...)
    pair_penalties(z, z', p) terms tying an item's encoder output to a neighbour's (only when
                             `uses_pairs`)
    class attributes         code activation, how many outputs the encoder has per code unit, prior

Input corruption and augmentation (a copy's alterations, on the raw image) are config fields of
every variant, applied before the encoder with the loss taken against the clean input; images
may also be centred on their centroid and zoomed to a common spread (`centre_images`,
`scale_images`, encoder and target alike) and standardised by their own statistics
(`standardise_images`, the encoder's view only). The trainer reads only `Output.loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashae import nets
from hashae.errors import ConfigError
from hashae.inference import IMAGE_VARIANCE_FLOOR, INK_FLOOR, SPREAD_SHARE, ZOOM_LIMITS
from hashae.variants.config import AEConfig


@dataclass(frozen=True)
class Output:
    """What every variant returns for a batch: total loss, its named (weighted) terms, the code."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    code: torch.Tensor
    reconstruction: torch.Tensor


ACTIVATIONS = {"identity": lambda z: z, "sigmoid": torch.sigmoid, "relu": F.relu}


class Autoencoder(nn.Module):
    """The one forward pass: normalise -> corrupt (training) -> encode -> latent -> decode -> loss."""

    config_class: ClassVar[type[AEConfig]]
    code_activation: ClassVar[str] = "identity"  # h = activation(z) outside training quirks
    bits_activation: ClassVar[str | None] = None  # what is thresholded for bits; None = code_activation
    encoder_outputs_per_unit: ClassVar[int] = 1  # VAE: 2 (mu and log variance)
    median_threshold: ClassVar[bool] = True  # bits = value > per-unit training median (else > 0)
    binary_codes: ClassVar[bool] = False  # its bits are the product's hash codes
    # the distribution its codes were trained towards, in words; None: no prior (a plain autoencoder),
    # so a naive sample draws each unit from its own training values, independently of the others
    prior: ClassVar[str | None] = None
    # This process's share of the global batch in distributed training (a hashae.distributed
    # BatchShare the trainer sets for a run); None: the batch in hand is the whole batch.
    batch_share: Any = None

    def __init__(self, config: AEConfig) -> None:
        super().__init__()
        self.config = config
        encoder_specs, decoder_specs = self.layer_specs()
        self.encoder_specs = encoder_specs
        self.encoder = nets.build(encoder_specs)
        self.decoder = nets.build(decoder_specs)
        shape, d = config.input_shape, config.code_size
        self.register_buffer("input_mean", torch.zeros(shape))
        self.register_buffer("input_scale", torch.ones(shape))
        self.register_buffer("bit_threshold", torch.zeros(d))
        self.register_buffer("code_bank", torch.zeros(0, d))

    # -- architecture ---------------------------------------------------------------------------
    def layer_specs(self) -> tuple[list[nets.LayerSpec], list[nets.LayerSpec]]:
        c = self.config
        out = c.code_size * self.encoder_outputs_per_unit
        if c.arch == "conv":
            return (
                nets.conv_encoder_specs(c.input_shape, c.hidden, c.dense, out),
                nets.conv_decoder_specs(c.input_shape, c.hidden, c.dense, c.code_size),
            )
        d_in = nets.flat_size(c.input_shape)
        return (
            nets.mlp_specs([d_in, *c.hidden, out], final_activation=False),
            nets.mlp_specs([c.code_size, *reversed(c.hidden), d_in], final_activation=False),
        )

    # -- hooks ------------------------------------------------------------------------------------
    def latent(self, z: torch.Tensor, progress: float) -> torch.Tensor:
        """The code h fed to the decoder, from the encoder output z (B, out)."""
        return ACTIVATIONS[self.code_activation](z)

    def penalties(self, x_in: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms, each a scalar (mean over the batch)."""
        return {}

    # -- shared pass ----------------------------------------------------------------------------
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's view of raw inputs x (B, *input_shape): each image centred on its centroid
        (and zoomed to a common spread) and standardised by its own mean and deviation when the
        config says so, then each feature normalised by the fitted statistics (hashae.inference
        does the same in numpy)."""
        if self.config.centre_images:
            x = centre_images(x, scale=self.config.scale_images)
        if self.config.standardise_images:
            x = standardise_images(x)
        return (x - self.input_mean) / self.input_scale

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs: raw inputs x (centred and zoomed when the config says so,
        not standardised) normalised per feature."""
        if self.config.centre_images:
            x = centre_images(x, scale=self.config.scale_images)
        return (x - self.input_mean) / self.input_scale

    def encode_pre(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Encoder output z: (B, code_size * encoder_outputs_per_unit)."""
        return self.encoder(nets.to_model_input(x_norm, self.encoder_specs))

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output in normalised input space (logits for BCE), shaped like the input."""
        return self.decoder(h).reshape(h.shape[0], *self.config.input_shape)

    def forward(self, x: torch.Tensor, *, progress: float = 1.0, paired: torch.Tensor | None = None) -> Output:
        """x: (B, *input_shape) raw inputs; progress in [0, 1]: share of training done.

        paired: optional (B, *input_shape) positives, paired[i] a neighbour of x[i] (found without
        labels). Variants whose `uses_pairs` is false ignore it; the others add `pair_penalties`."""
        x_clean = self.target(x)  # (B, *input_shape), the reconstruction target
        x_view = self.per_row_random(self.config.augmentation.apply, x) if self.training else x  # an altered copy
        x_in = x_clean if x_view is x and not self.config.standardise_images else self.normalise(x_view)
        x_in = self.per_row_random(self.config.corruption.apply, x_in) if self.training else x_in
        tie_views = self.training and x_view is not x and self.ties_views
        if tie_views:  # the altered and the clean view in one encoder pass: (2B, out)
            z, z_clean = self.encode_pre(torch.cat([x_in, self.normalise(x)])).split(len(x))
        else:
            z = self.encode_pre(x_in)  # (B, out)
        h = self.latent(z, progress)  # (B, code_size)
        logits = self.decode_logits(h)  # (B, *input_shape)
        terms = {"reconstruction": self.reconstruction_loss(logits, x_clean), **self.penalties(x_in, z, h)}
        if tie_views:
            terms.update(self.view_penalties(z, z_clean))
        if paired is not None and self.uses_pairs:
            paired_clean = self.normalise(self.per_row_random(self.pair_view, paired))
            paired_in = self.per_row_random(self.config.corruption.apply, paired_clean) if self.training else paired_clean
            terms.update(self.pair_penalties(z, self.encode_pre(paired_in), progress))
        return Output(loss=sum(terms.values()), terms=terms, code=h, reconstruction=logits)

    # -- the whole batch, when a batch is shared by processes (hashae.distributed) ---------------
    def whole_batch(self, t: torch.Tensor) -> torch.Tensor:
        """t's rows (B, ...) over the whole global batch: gathered from every process, with gradient,
        in distributed training; t itself otherwise (and outside training)."""
        if self.batch_share is None or not self.training:
            return t
        return self.batch_share.gather(t)

    def per_row_random(self, fn: Any, t: torch.Tensor) -> torch.Tensor:
        """fn(t) for an fn that draws random numbers row by row (noise, corruption, shifts): in
        distributed training drawn for the whole global batch, as one process would, and this
        process's rows kept; fn(t) itself otherwise."""
        if self.batch_share is None or not self.training:
            return fn(t)
        return self.batch_share.per_row(fn, t)

    @property
    def ties_views(self) -> bool:
        """Whether training with an augmentation also encodes the clean inputs for view_penalties."""
        return False

    def view_penalties(self, z_view: torch.Tensor, z_clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms tying the encoder output of an altered view z_view (B, out) to
        that of the clean inputs it was made from, z_clean (B, out) (only in training with an
        augmentation, and only when ties_views)."""
        return {}

    def whole_batch_terms(self) -> frozenset[str]:
        """Names of the loss terms computed over the whole batch (from whole_batch rows), not as a
        mean over this process's items; distributed training weighs the two kinds differently."""
        return frozenset()

    @property
    def uses_pairs(self) -> bool:
        """Whether forward makes use of a paired batch of neighbours (else it is never encoded)."""
        return False

    def pair_penalties(self, z: torch.Tensor, z_pair: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms tying the encoder outputs of items and their neighbours."""
        return {}

    def pair_view(self, paired: torch.Tensor) -> torch.Tensor:
        """The view of the paired raw inputs the encoder sees in training (augmentation hook)."""
        return paired

    def reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-item sum over input features, mean over the batch (the ELBO scale)."""
        if self.config.recon_loss == "bce":
            per_item = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_item = 0.5 * (logits - target) ** 2 / self.config.recon_scale**2
        return per_item.flatten(1).sum(1).mean()

    # -- inference ------------------------------------------------------------------------------
    def _code_slice(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, : self.config.code_size]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous code of raw inputs (B, code_size): the VAE mean, or the activated code."""
        z = self.encode_pre(self.normalise(x))
        return ACTIVATIONS[self.code_activation](self._code_slice(z))

    @torch.no_grad()
    def bit_values(self, x: torch.Tensor) -> torch.Tensor:
        """The per-unit values that are thresholded into bits (B, code_size)."""
        z = self.encode_pre(self.normalise(x))
        return ACTIVATIONS[self.bits_activation or self.code_activation](self._code_slice(z))

    @torch.no_grad()
    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean codes (B, code_size)."""
        return self.bit_values(x) > self.bit_threshold

    @torch.no_grad()
    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Reconstruction in raw input space from codes h (B, code_size)."""
        logits = self.decode_logits(h)
        if self.config.recon_loss == "bce":
            return torch.sigmoid(logits)
        return logits * self.input_scale + self.input_mean

    def inference_spec(self) -> dict[str, Any]:
        """What hashae.inference needs to run the encoder with numpy alone."""
        return {
            "encoder": self.encoder_specs,
            "code_size": self.config.code_size,
            "embedding_activation": self.code_activation,
            "bits_activation": self.bits_activation or self.code_activation,
        }

    # -- fitted statistics ----------------------------------------------------------------------
    def fit_normalisation(self, x: np.ndarray) -> None:
        """Standardise inputs per feature for MSE models; BCE models keep inputs in [0, 1]."""
        if self.config.recon_loss == "bce":
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise ConfigError(f"BCE needs inputs in [0, 1], data spans [{lo:.3g}, {hi:.3g}]; use recon_loss=mse")
            return
        mean = torch.from_numpy(x.mean(axis=0).astype(np.float32))
        std = torch.from_numpy(x.std(axis=0).astype(np.float32))
        self.input_mean.copy_(mean)
        self.input_scale.copy_(torch.clamp(std, min=1e-3 * float(std.max()) + 1e-8))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, *, bank_size: int = 2048, seed: int = 0) -> None:
        """After training: per-unit bit thresholds and a bank of training codes for sampling."""
        values = torch.cat([self.bit_values(chunk) for chunk in x.split(1024)])
        if self.median_threshold:
            self.bit_threshold.copy_(split_point(values))
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(x), generator=generator)[:bank_size]
        bank = torch.cat([self.sample_code_of(x[pick][i : i + 1024]) for i in range(0, len(pick), 1024)])
        self.code_bank = bank

    def sample_code_of(self, x: torch.Tensor) -> torch.Tensor:
        """The code the decoder sees at inference for x (kept in the bank for calibrated sampling)."""
        return self.embed(x)

    @torch.no_grad()
    def sample(self, n: int, *, calibrated: bool, seed: int = 0) -> torch.Tensor:
        """n generated inputs. calibrated: codes drawn from the bank of training codes; otherwise
        each unit drawn independently from the prior (the naive sample)."""
        generator = torch.Generator().manual_seed(seed)
        if calibrated:
            h = self.code_bank[torch.randint(len(self.code_bank), (n,), generator=generator)]
        else:
            h = self.prior_sample(n, generator)
        return self.decode(h)

    def prior_sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Codes (n, code_size) from the prior; without one, each unit drawn from its own training
        marginal, independently of the rest (a naive stand-in that ignores how units co-vary)."""
        rows = torch.randint(len(self.code_bank), (n, self.config.code_size), generator=generator)
        return torch.gather(self.code_bank, 0, rows)


def standardise_images(x: torch.Tensor) -> torch.Tensor:
    """Each input of x (B, ...) centred on its own mean and divided by its own standard deviation
    (population, floored: sqrt(var + IMAGE_VARIANCE_FLOOR)); hashae.inference.standardise_images
    is the numpy twin the shipped encoder runs."""
    flat = x.flatten(1)  # (B, features)
    mean = flat.mean(1, keepdim=True)
    var = (flat - mean).pow(2).mean(1, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + IMAGE_VARIANCE_FLOOR)).reshape(x.shape)


def centre_images(x: torch.Tensor, *, scale: bool = False) -> torch.Tensor:
    """Images x (B, C, H, W) moved so that each one's centroid of intensity above its minimum lies
    at the image centre (bilinear, sub-pixel, the minimum shifted in), and with `scale` zoomed
    about it to a common spread (spread_zoom); hashae.inference.centre_images is the numpy twin."""
    b, _, h, w = x.shape
    low = x.flatten(1).min(1).values[:, None, None, None]  # (B, 1, 1, 1): the background
    above = x - low  # a brightness or contrast change scales it: the centroid stays
    rows, cols = above.sum(dim=(1, 3)), above.sum(dim=(1, 2))  # (B, H), (B, W)
    mass = rows.sum(1)  # (B,)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    dy = torch.where(mass > 0, rows @ torch.arange(h, dtype=x.dtype, device=x.device) / safe - (h - 1) / 2, torch.zeros_like(mass))
    dx = torch.where(mass > 0, cols @ torch.arange(w, dtype=x.dtype, device=x.device) / safe - (w - 1) / 2, torch.zeros_like(mass))
    zoom = spread_zoom(above, dy + (h - 1) / 2, dx + (w - 1) / 2) if scale else torch.ones_like(mass)
    return torch.einsum("bik,bckl,bjl->bcij", _centring_weights(h, dy, zoom), above, _centring_weights(w, dx, zoom)) + low


def spread_zoom(above: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Per image of above (B, C, H, W), intensities above each image's minimum, the zoom (B,)
    bringing the RMS radius of its ink (intensity above INK_FLOOR of its range) about (cy, cx) to
    SPREAD_SHARE * sqrt(H * W), within ZOOM_LIMITS; as hashae.inference.spread_zoom."""
    h, w = above.shape[-2:]
    top = above.flatten(1).max(1).values  # (B,): the image's range
    ink = torch.clamp(above - (INK_FLOOR * top)[:, None, None, None], min=0)
    rows, cols = ink.sum(dim=(1, 3)), ink.sum(dim=(1, 2))  # (B, H), (B, W)
    mass = rows.sum(1)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    dy = torch.arange(h, dtype=above.dtype, device=above.device)[None, :] - cy[:, None]  # (B, H)
    dx = torch.arange(w, dtype=above.dtype, device=above.device)[None, :] - cx[:, None]  # (B, W)
    radius = torch.sqrt(((rows * dy * dy).sum(1) + (cols * dx * dx).sum(1)) / safe)
    zoom = torch.clamp(SPREAD_SHARE * math.sqrt(h * w) / torch.clamp(radius, min=1e-3), *ZOOM_LIMITS)
    return torch.where(mass > 0, zoom, torch.ones_like(zoom))


def _centring_weights(size: int, offset: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """(B, size, size): output i takes the input at c + (i - c) / zoom + offset (triangle kernel,
    c the centre), as hashae.inference.centring_weights."""
    positions = torch.arange(size, dtype=offset.dtype, device=offset.device)
    centre = (size - 1) / 2
    source = centre + (positions[None, :] - centre) / zoom[:, None] + offset[:, None]  # (B, out i)
    return torch.clamp(1 - (positions[None, None, :] - source[:, :, None]).abs(), min=0)


def split_point(values: torch.Tensor) -> torch.Tensor:
    """Per column of values (n, d), the midpoint between the two middle order statistics: a median
    that is (unless those two are equal) no item's own value, so float rounding between a batched
    and a one-item encoder pass cannot flip that item's bit."""
    ordered = values.sort(dim=0).values
    k = len(ordered) // 2
    return ordered[k] if len(ordered) < 2 else 0.5 * (ordered[k - 1] + ordered[k])


def info_nce(u: torch.Tensor, v: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit rows u, v (B, d): row i of u must pick row i of v among all of v's
    rows by cosine over temperature, and the other way round (in-batch negatives)."""
    logits = u @ v.T / temperature  # (B, B)
    target = torch.arange(len(u), device=u.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
