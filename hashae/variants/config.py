"""The configs of every variant: frozen dataclasses whose defaults are the product's defaults.

A config built with only a kind, an input shape and a code size is what `hashae train` and
`hashae index` train. Fields whose best value depends on the data's shape or the code length
default to None and are chosen by the rules of `choose_by_shape` (one place, below); a value given
explicitly always wins. Every field is checked (type and range) when the config is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hashae import nets
from hashae.errors import ConfigError
from hashae.variants.fields import check_all, setting

# Hashing: the decorrelation term paid only on long codes of unstandardised inputs (Fashion-MNIST 64
# bits +0.005 mAP@1000 before images were standardised; at 32 bits nothing there and -0.019 on a
# colour folder). On standardised images it no longer pays (64 bits, seeds 0 / 1: 0.7601 / 0.7609
# with it, 0.7598 / 0.7638 without) and it spreads the codes (34% empty radius-2 balls against
# 22-23%), so only vectors keep it. Tuning notes: benchmarks/results/tuning-*.md.
DECORRELATE_FROM_BITS = 64
DECORRELATION_WEIGHT = 1000.0


@dataclass(frozen=True)
class Corruption:
    """The corruption process C(x~|x) of a denoising autoencoder, applied to normalised inputs.

    kind: none | gaussian (additive N(0, strength^2)) | mask (each input zeroed with probability
    strength) | salt_pepper (each input set to 0 or 1 with probability strength).
    """

    kind: str = setting("none", choices=("none", "gaussian", "mask", "salt_pepper"))
    strength: float = setting(0.0, at_least=0)

    def __post_init__(self) -> None:
        check_all(self)
        if self.kind in ("mask", "salt_pepper") and self.strength > 1:
            raise ConfigError(f"corruption strength {self.strength} out of range for {self.kind} (a probability, <= 1)")

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
class Augmentation:
    """How training views of images (B, C, H, W) in [0, 1] are altered before the encoder (the
    alterations of a near-duplicate; hashae.augment does them), every part drawn per image. The
    loss is taken against the clean image: a denoising autoencoder whose noise is a copy's changes.

    shift: translation in whole pixels, x and y each uniform in [-shift, shift];
    rotate: rotation uniform in [-rotate, rotate] degrees;
    scale: zoom uniform in [1 - scale, 1 + scale] (above 1 a crop, below a pad);
    brightness / contrast: with probability 1/2 each, intensities (contrast: their deviations from
    the image's mean) times a factor uniform in [1 - value, 1 + value];
    half_resolution / blur: probability of a bilinear round trip through half size / of a 3x3
    Gaussian blur;
    noise: with probability 1/2, additive N(0, s^2) noise with s uniform in [0, noise].
    Zeros (black) fill what a warp uncovers; the result is clipped to [0, 1]. All 0: no change.
    """

    shift: int = setting(0, at_least=0)
    rotate: float = setting(0.0, at_least=0, at_most=180)
    scale: float = setting(0.0, at_least=0, at_most=0.5)
    brightness: float = setting(0.0, at_least=0, at_most=1)
    contrast: float = setting(0.0, at_least=0, at_most=1)
    half_resolution: float = setting(0.0, at_least=0, at_most=1)
    blur: float = setting(0.0, at_least=0, at_most=1)
    noise: float = setting(0.0, at_least=0)

    def __post_init__(self) -> None:
        check_all(self)

    @property
    def active(self) -> bool:
        """Whether apply alters anything."""
        return any(getattr(self, item.name) for item in dataclasses.fields(self))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """An altered copy of raw images x (B, C, H, W) in [0, 1]; x itself is left untouched."""
        if not self.active:
            return x
        from hashae.augment import altered

        return altered(x, self)


@dataclass(frozen=True)
class AEConfig:
    """Fields every variant shares. Sizes: code_size is the number of bits (binary variants) or the
    latent dimension (continuous ones).

    arch: mlp (hidden = widths of the hidden layers) or conv (hidden = channels of the strided
    convolutions, followed by a dense layer of `dense` units). recon_loss: bce (inputs in [0, 1])
    or mse (Gaussian, 0.5 * sum((x - x_hat)^2) / recon_scale^2); None: by the input's shape.

    standardise_images: images only: the encoder sees each image centred and scaled by its own
    mean and standard deviation (hashae.inference.standardise_images) before the per-feature
    normalisation, so a global brightness or contrast change does not reach the code; the
    reconstruction target stays the image. centre_images: images only: each image moved (sub-pixel,
    bilinear) so its intensity centroid lies at the centre, for the encoder and the reconstruction
    target alike (hashae.inference.centre_images), so a shifted copy gets the same view.
    scale_images: with centre_images: each image also zoomed about its centroid so its ink spreads
    over a common share of the frame (hashae.inference.spread_zoom), so a cropped or padded copy
    gets (nearly) the same view. augmentation: images only: what the encoder's training
    view alters (see Augmentation; off by default). corruption: noise on the normalised view.

    WRITTEN_BEFORE: the value a field had in effect in checkpoints saved before the field existed
    (hashae.checkpoint fills it in when the saved config lacks it, so an old model loads as it was
    trained even where today's default differs).
    """

    input_shape: tuple[int, ...] = setting((1, 28, 28), positive=True)
    code_size: int = setting(32, positive=True)
    arch: str = setting("mlp", choices=("mlp", "conv"))
    hidden: tuple[int, ...] = setting((512, 256), positive=True)
    dense: int = setting(256, positive=True)
    recon_loss: str | None = setting(None, choices=("bce", "mse"))
    recon_scale: float = setting(1.0, positive=True)
    corruption: Corruption = setting(Corruption())
    standardise_images: bool = setting(False)
    centre_images: bool = setting(False)
    scale_images: bool = setting(False)
    augmentation: Augmentation = setting(Augmentation())

    kind: ClassVar[str] = ""
    WRITTEN_BEFORE: ClassVar[dict[str, Any]] = {"standardise_images": False, "centre_images": False, "scale_images": False, "augmentation": {}}
    # TrainConfig fields this kind trains best with (over TrainConfig's own defaults)
    TRAINING: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        check_all(self)
        for name, value in choose_by_shape(self).items():
            object.__setattr__(self, name, value)
        self.check_together()

    def check_together(self) -> None:
        """Rules between fields (each field alone was checked by check_all)."""
        if not self.input_shape:
            raise ConfigError(f"{self.kind} config: input_shape must not be empty")
        if self.arch == "conv":
            if not self.hidden:
                raise ConfigError(f"{self.kind} config: the conv architecture needs hidden channel counts, e.g. hidden=[32,64]")
            nets.conv_input_shape(self.input_shape, len(self.hidden))
        images = len(self.input_shape) == 3
        if (self.standardise_images or self.centre_images or self.augmentation.active) and not images:
            raise ConfigError(f"{self.kind} config: standardise_images, centre_images and augmentation need image input (C, H, W), got shape {self.input_shape}")
        if self.scale_images and not self.centre_images:
            raise ConfigError(f"{self.kind} config: scale_images zooms each image about its centroid and needs centre_images")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (kind included)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AEConfig:
        """Rebuild from to_dict() output (or any subset of fields); unknown fields are an error."""
        data = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown {cls.kind} config field {', '.join(map(repr, unknown))}; known: {', '.join(cls.field_names())}")
        return cls(**data)


def choose_by_shape(config: AEConfig) -> dict[str, Any]:
    """The product's value of each field the config leaves at None, by the input's shape and the
    code length. The rules, all of them:

    - recon_loss: mse on vectors (1-D inputs, standardised per feature), bce on images (pixels in [0, 1]);
    - corruption (denoising, hashing): gaussian 0.2 on vectors (zeroing a feature is no "missing
      pixel"), masking on images at the kind's IMAGE_MASKING;
    - pair_shift (hashing): 1 pixel on images (C, H, W), 0 on anything else (nothing to translate);
    - decorrelation (hashing): DECORRELATION_WEIGHT on vectors coded in DECORRELATE_FROM_BITS bits or
      more, else 0 (images are standardised, and there it no longer pays);
    - standardise_images (vae, hashing), centre_images (vae): on images, off on anything else;
    - scale_images (vae): on images that are centred, off on anything else;
    - augmentation (vae): the kind's IMAGE_AUGMENTATION on images, none on anything else;
    - contrast (vae): the kind's CONTRAST_WEIGHT when the (chosen) augmentation is active, else 0
      (without an altered copy there is nothing to contrast).
    """
    vectors, images = len(config.input_shape) == 1, len(config.input_shape) == 3

    def augmentation() -> Augmentation:
        chosen = getattr(config, "augmentation", None)
        return chosen if chosen is not None else (config.IMAGE_AUGMENTATION if images else Augmentation())

    rules = {
        "recon_loss": lambda: "mse" if vectors else "bce",
        "corruption": lambda: Corruption("gaussian", 0.2) if vectors else Corruption("mask", config.IMAGE_MASKING),
        "pair_shift": lambda: 1 if images else 0,
        "decorrelation": lambda: DECORRELATION_WEIGHT if vectors and config.code_size >= DECORRELATE_FROM_BITS else 0.0,
        "standardise_images": lambda: images,
        "centre_images": lambda: images,
        "scale_images": lambda: images and config.centre_images is not False,  # it zooms about the centroid
        "augmentation": augmentation,
        "contrast": lambda: config.CONTRAST_WEIGHT if augmentation().active else 0.0,
    }
    return {name: rule() for name, rule in rules.items() if getattr(config, name, ...) is None}


@dataclass(frozen=True)
class LinearConfig(AEConfig):
    """Linear undercomplete autoencoder: one linear encoder and decoder layer, MSE. Spans PCA."""

    hidden: tuple[int, ...] = setting((), positive=True)
    recon_loss: str | None = setting("mse", choices=("bce", "mse"))
    kind: ClassVar[str] = "linear"


@dataclass(frozen=True)
class UndercompleteConfig(AEConfig):
    """Non-linear undercomplete autoencoder (MLP or conv), linear code layer."""

    kind: ClassVar[str] = "undercomplete"


@dataclass(frozen=True)
class DenoisingConfig(AEConfig):
    """Undercomplete autoencoder trained to undo corruption (by default masking noise on images)."""

    corruption: Corruption | None = setting(None)
    kind: ClassVar[str] = "denoising"
    IMAGE_MASKING: ClassVar[float] = 0.3


@dataclass(frozen=True)
class SparseConfig(AEConfig):
    """ReLU code layer with an L1 penalty sparsity * sum_i |h_i| (a Laplace prior on the code)."""

    sparsity: float = setting(0.1, at_least=0)
    kind: ClassVar[str] = "sparse"


@dataclass(frozen=True)
class ContractiveConfig(AEConfig):
    """Sigmoid code layer with the penalty contraction * ||J_f(x)||_F^2 of the encoder Jacobian."""

    hidden: tuple[int, ...] = setting((), positive=True)
    contraction: float = setting(0.1, at_least=0)
    kind: ClassVar[str] = "contractive"


@dataclass(frozen=True)
class VAEConfig(AEConfig):
    """Variational autoencoder: Gaussian posterior, N(0, I) prior, beta-weighted closed-form KL.

    invariance: with an augmentation, weight of mean ||mu(altered x) - mu(x)||^2, the posterior
    mean of a training image's altered copy pulled towards the image's own (an extra encoder pass;
    off: it bought nothing over the augmentation alone, duplicates-training.md);
    contrast: with an augmentation, weight of an InfoNCE term that tells each training image's
    altered copy from the rest of the batch by the cosine of the posterior means (copy and image
    alike, over contrast_temperature; the clean images go through the encoder in one batch with
    their altered copies, a pass shared with invariance); None = by shape: CONTRAST_WEIGHT when the augmentation is active, else 0. Unlike
    the pull, it pushes the other images away: a copy's nearest mean becomes its original's
    (benchmarks/results/duplicates-training.md);
    standardise_images, centre_images, scale_images, augmentation: None = by shape (choose_by_shape):
    on images, each image centred, zoomed to a common spread and standardised, and the encoder
    trained on IMAGE_AUGMENTATION's altered copies.
    """

    beta: float = setting(1.0, at_least=0)
    invariance: float = setting(0.0, at_least=0)
    contrast: float | None = setting(None, at_least=0)
    contrast_temperature: float = setting(0.1, positive=True)
    standardise_images: bool | None = setting(None)
    centre_images: bool | None = setting(None)
    scale_images: bool | None = setting(None)
    augmentation: Augmentation | None = setting(None)
    # Images: the VAE orders equal and nearby codes (hamming ties, the hybrid re-rank, latent
    # mode), so it is trained for near-duplicates (issue 13, benchmarks/results/duplicates-training.md):
    # each image centred, zoomed and standardised, its encoder shown altered copies of the bench's kinds.
    IMAGE_AUGMENTATION: ClassVar[Augmentation] = Augmentation(
        shift=2, rotate=10, scale=0.25, brightness=0.3, contrast=0.3, half_resolution=0.4, blur=0.4, noise=0.05)
    CONTRAST_WEIGHT: ClassVar[float] = 20.0
    # checkpoints saved before `contrast` existed were trained without it
    WRITTEN_BEFORE: ClassVar[dict[str, Any]] = {**AEConfig.WRITTEN_BEFORE, "contrast": 0.0}
    kind: ClassVar[str] = "vae"


@dataclass(frozen=True)
class HashingConfig(AEConfig):
    """Semantic hashing: binary codes from a sigmoid code layer, bits = pre-activation above its
    threshold. The defaults are the product's recipe (tuned on Fashion-MNIST, benchmarks/tune_hashing.py):
    a denoising autoencoder (masked input pixels) whose batch-standardised code units, times a
    learned per-unit gain, get Gaussian noise ramped up before the sigmoid and are seen by the
    decoder as hard 0/1 codes of the noisy units from the first step (straight-through), so the
    units saturate by growing above the noise (the seed's mechanism); a bit-balance term, and a
    contrastive term pulling each item's code towards that of a label-free neighbour against the
    rest of the batch.

    noise_max, noise_ramp: N(0, sigma^2) noise added before the sigmoid in training, sigma ramped
    linearly from 0 to noise_max over the first noise_ramp share of training, so units saturate
    (the seed's recipe; 0 = off);
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
    above its training median (the calibrated bit_threshold);
    code_gain: a learnable per-unit gain after the standardisation (BatchNorm's affine scale,
    initialised to 1): the only way a standardised unit can grow above the injected noise, so
    saturation is earned against the noise rather than set by a fixed scale (the balance,
    decorrelation and consistency terms see the standardised units without it);
    gain_speed: the gain is exp(gain_speed * a learned parameter), so an optimiser step moves its
    logarithm gain_speed times as far as another weight's (Adam's steps are about lr in size).
    standardise_images: None = by shape (choose_by_shape): on images, so the encoder sees each image
    centred and scaled by its own mean and deviation, and its label-free neighbours are found in
    that view (+0.020 mAP@1000 at 32 bits on 60k images; centring the images as the VAE does cost
    0.008: benchmarks/results/tuning-2026-12-01.md).

    The seed's plain recipe (hashae.recipes.RECIPES["seed"], the bench's `seed` row): noise_max=4,
    hard_phase=0, code_norm=false, code_gain=false, consistency=0, balance=0, no corruption, no
    image standardisation.
    """

    code_size: int = setting(32, positive=True, multiple_of=8)
    hidden: tuple[int, ...] = setting((1024,), positive=True)  # one wide layer beat (512, 256) at 32 bits
    noise_max: float = setting(4.0, at_least=0)
    noise_ramp: float = setting(0.33, positive=True, at_most=1)
    balance: float = setting(1000.0, at_least=0)
    decorrelation: float | None = setting(None, at_least=0)
    sparsity: float = setting(0.0, at_least=0)
    consistency: float = setting(100.0, at_least=0)  # 50 -> 100: +0.010 mAP@1000 at 16 bits (tuning-2026-12-01.md)
    consistency_kind: str = setting("infonce", choices=("pull", "infonce"))
    temperature: float = setting(0.3, positive=True)
    sharpen: float = setting(8.0, at_least=1)
    pair_shift: int | None = setting(None, at_least=0)
    hard_phase: float = setting(1.0, at_least=0, at_most=1)
    code_norm: bool = setting(True)
    code_gain: bool = setting(True)
    gain_speed: float = setting(4.0, positive=True)
    corruption: Corruption | None = setting(None)
    standardise_images: bool | None = setting(None)
    kind: ClassVar[str] = "hashing"
    IMAGE_MASKING: ClassVar[float] = 0.2
    TRAINING: ClassVar[dict[str, Any]] = {"lr": 6e-3}  # a 3x higher peak rate paid at 32 and 64 bits

    def check_together(self) -> None:
        super().check_together()
        if self.pair_shift and len(self.input_shape) != 3:
            raise ConfigError(f"hashing config: pair_shift {self.pair_shift} needs image input (C, H, W), got shape {self.input_shape}")
