"""Random alterations of images of the kinds a near-duplicate undergoes (issue 13), for training.

`hashae.variants.Augmentation` (what to alter, how much) is a config value (a field of every variant's config, off by default): a model
trained with it encodes an altered view of each training image and reconstructs the clean image
(a denoising autoencoder whose "noise" is the copies' changes), so its code learns to ignore them.
The alterations are those of the near-duplicate bench (index/copies.py): an affine warp (shift,
rotation, scale: a crop or a pad), brightness and contrast, half resolution, blur and noise, each
drawn per image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from hashae.errors import ConfigError

if TYPE_CHECKING:
    from hashae.variants.config import Augmentation

BLUR_SIGMA = 1.0  # the 3x3 Gaussian blur's width in pixels (PIL's GaussianBlur(1), the bench's blur r1)


def altered(x: torch.Tensor, augmentation: Augmentation) -> torch.Tensor:
    """An altered copy of images x (B, C, H, W) in [0, 1] as `augmentation` describes (each part
    drawn per image); x itself is left untouched."""
    a = augmentation
    if x.dim() != 4:
        raise ConfigError(f"augmentation needs images (B, C, H, W), got a batch of shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    if a.shift or a.rotate or a.scale:
        x = _warp(x, shift=a.shift, rotate=a.rotate, scale=a.scale)
    if a.brightness:
        x = x * _per_image(b, a.brightness, like=x)
    if a.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _per_image(b, a.contrast, like=x)
    if a.half_resolution:
        x = _some(x, a.half_resolution, lambda v: F.interpolate(
            F.interpolate(v, scale_factor=0.5, mode="bilinear", align_corners=False), size=(h, w), mode="bilinear", align_corners=False))
    if a.blur:
        x = _some(x, a.blur, gaussian_blur)
    if a.noise:
        sigma = a.noise * torch.rand(b, device=x.device) * (torch.rand(b, device=x.device) < 0.5)
        x = x + torch.randn_like(x) * sigma.to(x.dtype)[:, None, None, None]
    return x.clamp(0, 1)


def _warp(x: torch.Tensor, *, shift: int, rotate: float, scale: float) -> torch.Tensor:
    """One bilinear affine warp per image: rotation and zoom about the centre, then a whole-pixel shift."""
    b, _, h, w = x.shape
    angle = (torch.rand(b) * 2 - 1) * math.radians(rotate)
    zoom = 1 + (torch.rand(b) * 2 - 1) * scale
    offset = torch.randint(-shift, shift + 1, (b, 2)).float() * torch.tensor([2 / w, 2 / h])  # pixels in grid units
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _per_image(b: int, spread: float, *, like: torch.Tensor) -> torch.Tensor:
    """A factor per image (B, 1, 1, 1): uniform in [1 - spread, 1 + spread] with probability 1/2, else 1."""
    factor = 1 + (torch.rand(b) * 2 - 1) * spread
    factor = torch.where(torch.rand(b) < 0.5, factor, torch.ones(b))
    return factor.to(like)[:, None, None, None]


def _some(x: torch.Tensor, share: float, alter) -> torch.Tensor:
    """x with alter applied to each image with probability `share`."""
    chosen = torch.rand(len(x), device=x.device) < share
    if not chosen.any():
        return x
    x = x.clone()
    x[chosen] = alter(x[chosen])
    return x


def gaussian_blur(x: torch.Tensor, *, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A 3x3 Gaussian blur of images x (B, C, H, W), edges replicated."""
    taps = torch.exp(-torch.arange(-1, 2, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma**2))
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2  # (3, 3)
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3).contiguous(), groups=c)
