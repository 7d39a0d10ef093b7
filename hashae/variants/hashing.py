"""The semantic-hashing autoencoder (binary codes, the product's model) and its helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashae.variants.base import Autoencoder, info_nce
from hashae.variants.config import HashingConfig
from hashae.variants.registry import register


@register(HashingConfig)
class HashingAutoencoder(Autoencoder):
    """Binary codes from a sigmoid code layer (see HashingConfig for the terms and the recipe)."""

    code_activation = "sigmoid"
    bits_activation = "identity"  # bits = pre-activation > 0
    binary_codes = True
    prior = "independent fair bits (what the balance term aims at)"

    def __init__(self, config: HashingConfig) -> None:
        super().__init__(config)
        # Running per-unit scale of z (the centre runs in bit_threshold), so a held-out pass during
        # training standardises as training does. Not saved: calibration sets the thresholds after.
        self.register_buffer("code_scale", torch.ones(config.code_size), persistent=False)
        # log of the per-unit gain after standardisation, over gain_speed (used when config.code_gain;
        # always a parameter, so every hashing checkpoint has one layout)
        self.code_log_gain = nn.Parameter(torch.zeros(config.code_size))
        self._register_load_state_dict_pre_hook(_default_gain, with_module=True)

    def gain(self) -> torch.Tensor:
        """The per-unit gain (code_size,): learned with code_gain, else 1."""
        if not self.config.code_gain:
            return torch.ones_like(self.code_log_gain)
        return (self.config.gain_speed * self.code_log_gain).exp()

    def preactivation(self, z: torch.Tensor) -> torch.Tensor:
        """What the noise is added to and the sigmoid applied to: gain * standardised z (B, bits)."""
        return self.gain() * self.standardise(z)

    @torch.no_grad()
    def code_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid code activations (B, bits) of raw inputs at inference, centred on the calibrated
        thresholds so activation > 0.5 is the model's bit (what the saturation share measures)."""
        return torch.sigmoid(self._centred(x))

    @torch.no_grad()
    def noise_flip_share(self, x: torch.Tensor, *, seed: int = 0) -> float:
        """Share of the bits of x that flip when the final training noise (noise_max) is added to
        the pre-activations at inference; 0 without noise."""
        if not self.config.noise_max:
            return 0.0
        a = self._centred(x)
        generator = torch.Generator().manual_seed(seed)
        noise = self.config.noise_max * torch.randn(a.shape, generator=generator)
        return float(((a > 0) != (a + noise > 0)).float().mean())

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        z = self._code_slice(self.encode_pre(self.normalise(x))) - self.bit_threshold
        scale = self.code_scale if self.config.code_norm else torch.ones_like(self.code_scale)
        return self.gain() * z / scale

    def noise_std(self, progress: float) -> float:
        return self.config.noise_max * min(1.0, progress / self.config.noise_ramp)

    @property
    def median_threshold(self) -> bool:  # type: ignore[override]
        return self.config.code_norm

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """With code_norm: each unit centred and scaled over the batch in training (running
        statistics updated), by the running statistics otherwise. Without code_norm: z itself."""
        if not self.config.code_norm:
            return z
        whole = self.whole_batch(z)  # (B, bits), B: the whole global batch in distributed training
        if not (self.training and len(whole) > 1):
            return (z - self.bit_threshold) / self.code_scale
        mean, std = whole.mean(0), whole.std(0) + 1e-5
        with torch.no_grad():
            self.bit_threshold.lerp_(mean.detach(), 0.1)
            self.code_scale.lerp_(std.detach(), 0.1)
        return (z - mean) / std

    def latent(self, z, progress):
        if not self.training:
            return (z > self.bit_threshold).to(z.dtype)  # the decoder sees the hard code at inference
        noisy = self.preactivation(z) + self.noise_std(progress) * self.per_row_random(torch.randn_like, z)  # (B, bits)
        soft = torch.sigmoid(noisy)
        if self.config.hard_phase and progress >= 1.0 - self.config.hard_phase:
            # hard code of the noisy unit, straight-through gradient: noise flips the bits of units
            # near their threshold, which the gain learns to avoid
            return soft + ((noisy > 0).to(z.dtype) - soft).detach()
        return soft

    @property
    def uses_pairs(self) -> bool:
        return self.config.consistency > 0

    def pair_view(self, paired):
        return random_shift(paired, self.config.pair_shift)

    def pair_penalties(self, z, z_pair, progress):
        c = self.config
        slope = 0.5 * (1.0 + (c.sharpen - 1.0) * progress)
        # on the standardised units without the gain: the gain is the code layer's answer to the
        # noise; through the tanh it over-sharpened the relaxed codes (32 bits, 20k items: 0.702
        # against 0.727 mAP@1000, benchmarks/results/tuning-2026-11-30.md)
        u, v = torch.tanh(slope * self.standardise(z)), torch.tanh(slope * self.standardise(z_pair))  # (B, bits)
        if c.consistency_kind == "pull":
            return {"consistency": c.consistency * (u - v).pow(2).sum(1).mean()}
        u, v = self.whole_batch(F.normalize(u, dim=1)), self.whole_batch(F.normalize(v, dim=1))  # in-batch negatives from the whole global batch
        return {"consistency": c.consistency * info_nce(u, v, c.temperature)}

    def penalties(self, x_in, z, h):
        c = self.config
        p = self.whole_batch(torch.sigmoid(self.standardise(z)))  # (B, bits), B: the whole global batch
        terms = {"balance": c.balance * (p.mean(0) - 0.5).pow(2).sum()}
        if c.decorrelation:
            terms["decorrelation"] = c.decorrelation * offdiagonal_correlation(p)
        if c.sparsity:
            terms["sparsity"] = c.sparsity * h.sum(1).mean()
        return terms

    def whole_batch_terms(self):
        whole = {"balance", "decorrelation"} | ({"consistency"} if self.config.consistency_kind == "infonce" else set())
        return frozenset(whole)

    def sample_code_of(self, x):
        return self.bits(x).float()

    def prior_sample(self, n, generator):
        return (torch.rand(n, self.config.code_size, generator=generator) < 0.5).float()


def _default_gain(module, state_dict, prefix, *args) -> None:
    """State dicts saved before the learnable gain existed load with gain 1."""
    key = prefix + "code_log_gain"
    if key not in state_dict:
        state_dict[key] = torch.zeros_like(module.code_log_gain)


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image of x (B, C, H, W) translated by its own uniform (dy, dx) in [-max_shift, max_shift],
    zeros shifted in."""
    if max_shift == 0:
        return x
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
    rows = torch.arange(h)[None, :] + torch.randint(0, 2 * s + 1, (b, 1))  # (B, H)
    cols = torch.arange(w)[None, :] + torch.randint(0, 2 * s + 1, (b, 1))  # (B, W)
    rows, cols = rows.to(x.device), cols.to(x.device)
    padded = torch.gather(padded, 2, rows[:, None, :, None].expand(b, c, h, w + 2 * s))  # (B, C, H, W + 2s)
    return torch.gather(padded, 3, cols[:, None, None, :].expand(b, c, h, w))


def offdiagonal_correlation(p: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal correlation between the columns of p (B, d)."""
    centred = p - p.mean(0)
    cov = centred.T @ centred / max(len(p) - 1, 1)  # (d, d)
    std = cov.diagonal().clamp_min(1e-8).sqrt()
    corr = cov / (std[:, None] * std[None, :])
    d = corr.shape[0]
    return (corr.pow(2).sum() - corr.diagonal().pow(2).sum()) / (d * (d - 1))
