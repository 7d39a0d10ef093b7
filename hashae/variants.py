"""Every autoencoder of the seed, behind one contract and one registry.

A variant is a frozen config dataclass (with a `kind`) and a model class. The model's forward pass
is shared (`Autoencoder.forward`); a variant changes it only through three small hooks:

    latent(z, progress)      how the code h is made from the encoder output z (noise, sampling)
    penalties(x_in, z, h)    extra named loss terms (sparsity, contraction, KL, bit balance, ...)
    pair_penalties(z, z', p) terms tying an item's encoder output to a neighbour's (only when
                             `uses_pairs`; the trainer may pass every forward a `paired` batch of
                             label-free neighbours, and variants without use for it ignore it)
    class attributes         code activation, how many outputs the encoder has per code unit

Input corruption (denoising) is a config field of every variant, applied before the encoder with the
loss taken against the clean input, so it composes with any of them. The trainer reads only
`Output.loss`; it never looks at a variant's kind.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashae import nets
from hashae.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# configs


@dataclass(frozen=True)
class Corruption:
    """The corruption process C(x~|x) of a denoising autoencoder, applied to normalised inputs.

    kind: none | gaussian (additive N(0, strength^2)) | mask (each input zeroed with probability
    strength) | salt_pepper (each input set to 0 or 1 with probability strength).
    """

    kind: str = "none"
    strength: float = 0.0

    KINDS: ClassVar[tuple[str, ...]] = ("none", "gaussian", "mask", "salt_pepper")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(f"unknown corruption {self.kind!r}; known: {', '.join(self.KINDS)}")
        if self.strength < 0 or (self.kind in ("mask", "salt_pepper") and self.strength > 1):
            raise ConfigError(f"corruption strength {self.strength} out of range for {self.kind}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A corrupted copy of x (same shape); x itself is left untouched."""
        if self.kind == "none" or self.strength == 0:
            return x
        if self.kind == "gaussian":
            return x + self.strength * torch.randn_like(x)
        hit = torch.rand_like(x) < self.strength
        if self.kind == "mask":
            return x.masked_fill(hit, 0.0)
        salt = (torch.rand_like(x) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)


@dataclass(frozen=True)
class AEConfig:
    """Fields every variant shares. Sizes: code_size is the number of bits (binary variants) or the
    latent dimension (continuous ones).

    arch: mlp (hidden = widths of the hidden layers) or conv (hidden = channels of the strided
    convolutions, followed by a dense layer of `dense` units). recon_loss: bce (inputs in [0, 1])
    or mse (Gaussian, 0.5 * sum((x - x_hat)^2) / recon_scale^2).
    """

    input_shape: tuple[int, ...] = (1, 28, 28)
    code_size: int = 32
    arch: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    dense: int = 256
    recon_loss: str = "bce"
    recon_scale: float = 1.0
    corruption: Corruption = field(default_factory=Corruption)

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise ConfigError(f"unknown arch {self.arch!r}; known: mlp, conv")
        if self.recon_loss not in ("bce", "mse"):
            raise ConfigError(f"unknown recon_loss {self.recon_loss!r}; known: bce, mse")
        if self.code_size <= 0 or any(h <= 0 for h in self.hidden) or not self.input_shape:
            raise ConfigError("code_size, hidden sizes and input_shape must be positive")
        if self.recon_scale <= 0:
            raise ConfigError("recon_scale must be positive")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (kind included)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AEConfig:
        """Rebuild from to_dict() output; unknown fields are an error, not silently dropped."""
        data = {k: v for k, v in data.items() if k != "kind"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown {cls.kind} config fields: {', '.join(sorted(unknown))}")
        if "corruption" in data and isinstance(data["corruption"], dict):
            data["corruption"] = Corruption(**data["corruption"])
        for name in ("input_shape", "hidden"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass(frozen=True)
class LinearConfig(AEConfig):
    """Linear undercomplete autoencoder: one linear encoder and decoder layer, MSE. Spans PCA."""

    hidden: tuple[int, ...] = ()
    recon_loss: str = "mse"
    kind: ClassVar[str] = "linear"


@dataclass(frozen=True)
class UndercompleteConfig(AEConfig):
    """Non-linear undercomplete autoencoder (MLP or conv), linear code layer."""

    kind: ClassVar[str] = "undercomplete"


@dataclass(frozen=True)
class DenoisingConfig(AEConfig):
    """Undercomplete autoencoder trained to undo masking noise (any corruption can be chosen)."""

    corruption: Corruption = field(default_factory=lambda: Corruption("mask", 0.3))
    kind: ClassVar[str] = "denoising"


@dataclass(frozen=True)
class SparseConfig(AEConfig):
    """ReLU code layer with an L1 penalty sparsity * sum_i |h_i| (a Laplace prior on the code)."""

    sparsity: float = 0.1
    kind: ClassVar[str] = "sparse"


@dataclass(frozen=True)
class ContractiveConfig(AEConfig):
    """Sigmoid code layer with the penalty contraction * ||J_f(x)||_F^2 of the encoder Jacobian."""

    hidden: tuple[int, ...] = ()
    contraction: float = 0.1
    kind: ClassVar[str] = "contractive"


@dataclass(frozen=True)
class VAEConfig(AEConfig):
    """Variational autoencoder: Gaussian posterior, N(0, I) prior, beta-weighted closed-form KL."""

    beta: float = 1.0
    kind: ClassVar[str] = "vae"


@dataclass(frozen=True)
class HashingConfig(AEConfig):
    """Semantic hashing: N(0, sigma^2) noise added before a sigmoid code layer during training, with
    sigma ramped linearly from 0 to noise_max over the first noise_ramp share of training, so the
    units saturate; bits are pre-activation > 0.

    balance: weight of sum_j (mean_batch sigmoid(z_j) - 0.5)^2 (each bit on for half the items);
    decorrelation: weight of the mean squared off-diagonal correlation between code units;
    sparsity: weight of an L1 term on the code (the sparse-autoencoder view);
    consistency: weight of the neighbourhood-consistency term, used when training is given
    label-free neighbour pairs: "pull" = mean_i sum_j (tanh(z_ij/2) - tanh(z'_ij/2))^2 between an
    item and its neighbour; "infonce" = contrastive loss with in-batch negatives on tanh(z/2) codes
    (cosine / temperature);
    pair_shift: images only: the paired neighbour is translated by up to this many pixels in x
    and y (each drawn uniformly per item, zeros shifted in), so codes also ignore small shifts;
    sharpen: slope of tanh(slope * z/2) in the consistency term at the end of training, ramped
    linearly from 1, so the relaxed codes it compares approach the sign bits retrieval uses;
    hard_phase: share of training at the end where the decoder sees the hard 0/1 code
    (straight-through gradient of the sigmoid; 1 = from the start);
    code_norm: standardise each code unit over the batch before noise and sigmoid (batch
    normalisation without parameters), so no unit can saturate and die; bits are then the unit
    above its training median (the calibrated bit_threshold).
    """

    code_size: int = 32
    noise_max: float = 4.0
    noise_ramp: float = 0.33
    balance: float = 1000.0
    decorrelation: float = 0.0
    sparsity: float = 0.0
    consistency: float = 0.0
    consistency_kind: str = "pull"
    temperature: float = 0.2
    sharpen: float = 1.0
    pair_shift: int = 0
    hard_phase: float = 0.0
    code_norm: bool = False
    corruption: Corruption = field(default_factory=lambda: Corruption("mask", 0.2))
    kind: ClassVar[str] = "hashing"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code_size % 8:
            raise ConfigError(f"hashing codes need a multiple of 8 bits, got {self.code_size}")
        if not 0 < self.noise_ramp <= 1 or self.noise_max < 0:
            raise ConfigError("noise_ramp must be in (0, 1] and noise_max >= 0")
        if self.consistency_kind not in ("pull", "infonce"):
            raise ConfigError(f"unknown consistency_kind {self.consistency_kind!r}; known: pull, infonce")
        if self.consistency < 0 or self.temperature <= 0 or not 0 <= self.hard_phase <= 1:
            raise ConfigError("consistency must be >= 0, temperature > 0 and hard_phase in [0, 1]")
        if self.sharpen < 1:
            raise ConfigError(f"sharpen must be >= 1, got {self.sharpen}")
        if self.pair_shift < 0 or (self.pair_shift and len(self.input_shape) != 3):
            raise ConfigError(f"pair_shift {self.pair_shift}: needs image input (C, H, W) and a value >= 0")


# ----------------------------------------------------------------------------------------------
# registry

REGISTRY: dict[str, tuple[type[AEConfig], type[Autoencoder]]] = {}


def register(config_class: type[AEConfig]):
    """Class decorator: register a model class under its config's kind."""

    def decorate(model_class: type[Autoencoder]) -> type[Autoencoder]:
        REGISTRY[config_class.kind] = (config_class, model_class)
        model_class.config_class = config_class
        return model_class

    return decorate


def known_kinds() -> list[str]:
    return sorted(REGISTRY)


def lookup(kind: str) -> tuple[type[AEConfig], type[Autoencoder]]:
    """(config class, model class) of a kind; an unknown kind names the known ones."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown model kind {kind!r}; known kinds: {', '.join(known_kinds())}") from None


def make_config(kind: str, **fields: Any) -> AEConfig:
    """The config of `kind` with the given fields overriding its defaults."""
    config_class, _ = lookup(kind)
    return config_class.from_dict(fields)


def create(config: AEConfig) -> Autoencoder:
    """A freshly initialised model for a config."""
    _, model_class = lookup(config.kind)
    return model_class(config)


# ----------------------------------------------------------------------------------------------
# the shared model


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
        x_clean = self.normalise(x)
        x_in = self.config.corruption.apply(x_clean) if self.training else x_clean
        z = self.encode_pre(x_in)  # (B, out)
        h = self.latent(z, progress)  # (B, code_size)
        logits = self.decode_logits(h)  # (B, *input_shape)
        terms = {"reconstruction": self.reconstruction_loss(logits, x_clean), **self.penalties(x_in, z, h)}
        if paired is not None and self.uses_pairs:
            paired_clean = self.normalise(self.pair_view(paired))
            paired_in = self.config.corruption.apply(paired_clean) if self.training else paired_clean
            terms.update(self.pair_penalties(z, self.encode_pre(paired_in), progress))
        return Output(loss=sum(terms.values()), terms=terms, code=h, reconstruction=logits)

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
        """Naive prior: each unit drawn from its own training marginal, independently of the rest."""
        rows = torch.randint(len(self.code_bank), (n, self.config.code_size), generator=generator)
        return torch.gather(self.code_bank, 0, rows)


# ----------------------------------------------------------------------------------------------
# the variants


@register(LinearConfig)
class LinearAutoencoder(Autoencoder):
    """h = W x + b, x_hat = V h + c. With MSE it learns the principal subspace."""


@register(UndercompleteConfig)
class UndercompleteAutoencoder(Autoencoder):
    """Non-linear encoder/decoder around a narrow linear code."""


@register(DenoisingConfig)
class DenoisingAutoencoder(Autoencoder):
    """Same network as undercomplete; its config corrupts inputs by default."""


@register(SparseConfig)
class SparseAutoencoder(Autoencoder):
    code_activation = "relu"

    def penalties(self, x_in, z, h):
        return {"sparsity": self.config.sparsity * h.abs().sum(1).mean()}


@register(ContractiveConfig)
class ContractiveAutoencoder(Autoencoder):
    code_activation = "sigmoid"

    def penalties(self, x_in, z, h):
        return {"contraction": self.config.contraction * self.jacobian_norm(x_in, h).mean()}

    def jacobian_norm(self, x_in: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 per item (B,). Closed form when the encoder is one linear layer under the
        sigmoid: sum_j (h_j (1 - h_j))^2 sum_i W_ji^2; batched autograd (vmap of jacrev) otherwise."""
        if len(self.encoder) == 1:
            weight_norms = (self.encoder[0].weight ** 2).sum(1)  # (code,)
            return ((h * (1 - h)) ** 2 * weight_norms).sum(1)

        def code_of(one: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.encode_pre(one.unsqueeze(0)))[0]

        jac = torch.func.vmap(torch.func.jacrev(code_of))(x_in)  # (B, code, *input_shape)
        return jac.flatten(1).pow(2).sum(1)


@register(VAEConfig)
class VariationalAutoencoder(Autoencoder):
    encoder_outputs_per_unit = 2

    def latent(self, z, progress):
        mu, logvar = z.chunk(2, dim=1)  # (B, d) each
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def penalties(self, x_in, z, h):
        mu, logvar = z.chunk(2, dim=1)
        return {"kl": self.config.beta * gaussian_kl(mu, logvar).mean()}

    def prior_sample(self, n, generator):
        return torch.randn(n, self.config.code_size, generator=generator)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per item, closed form: 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


@register(HashingConfig)
class HashingAutoencoder(Autoencoder):
    code_activation = "sigmoid"
    bits_activation = "identity"  # bits = pre-activation > 0
    binary_codes = True

    def __init__(self, config: HashingConfig) -> None:
        super().__init__(config)
        # Running per-unit scale of z (the centre runs in bit_threshold), so a held-out pass during
        # training standardises as training does. Not saved: calibration sets the thresholds after.
        self.register_buffer("code_scale", torch.ones(config.code_size), persistent=False)

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
        if not (self.training and len(z) > 1):
            return (z - self.bit_threshold) / self.code_scale
        mean, std = z.mean(0), z.std(0) + 1e-5
        with torch.no_grad():
            self.bit_threshold.lerp_(mean.detach(), 0.1)
            self.code_scale.lerp_(std.detach(), 0.1)
        return (z - mean) / std

    def latent(self, z, progress):
        if not self.training:
            return (z > self.bit_threshold).to(z.dtype)  # the decoder sees the hard code at inference
        z = self.standardise(z)
        soft = torch.sigmoid(z + self.noise_std(progress) * torch.randn_like(z))
        if self.config.hard_phase and progress >= 1.0 - self.config.hard_phase:
            return soft + ((z > 0).to(z.dtype) - soft).detach()  # hard code, straight-through gradient
        return soft

    @property
    def uses_pairs(self) -> bool:
        return self.config.consistency > 0

    def pair_view(self, paired):
        return random_shift(paired, self.config.pair_shift)

    def pair_penalties(self, z, z_pair, progress):
        c = self.config
        slope = 0.5 * (1.0 + (c.sharpen - 1.0) * progress)
        u, v = torch.tanh(slope * self.standardise(z)), torch.tanh(slope * self.standardise(z_pair))  # (B, bits)
        if c.consistency_kind == "pull":
            return {"consistency": c.consistency * (u - v).pow(2).sum(1).mean()}
        logits = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / c.temperature  # (B, B)
        target = torch.arange(len(u), device=u.device)
        nce = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return {"consistency": c.consistency * nce}

    def penalties(self, x_in, z, h):
        c = self.config
        p = torch.sigmoid(self.standardise(z))  # (B, bits)
        terms = {"balance": c.balance * (p.mean(0) - 0.5).pow(2).sum()}
        if c.decorrelation:
            terms["decorrelation"] = c.decorrelation * offdiagonal_correlation(p)
        if c.sparsity:
            terms["sparsity"] = c.sparsity * h.sum(1).mean()
        return terms

    def sample_code_of(self, x):
        return self.bits(x).float()

    def prior_sample(self, n, generator):
        return (torch.rand(n, self.config.code_size, generator=generator) < 0.5).float()


def split_point(values: torch.Tensor) -> torch.Tensor:
    """Per column of values (n, d), the midpoint between the two middle order statistics: a median
    that is (unless those two are equal) no item's own value, so float rounding between a batched
    and a one-item encoder pass cannot flip that item's bit."""
    ordered = values.sort(dim=0).values
    k = len(ordered) // 2
    return ordered[k] if len(ordered) < 2 else 0.5 * (ordered[k - 1] + ordered[k])


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


def parameter_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
