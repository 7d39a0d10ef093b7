"""Altered copies of an image, as files: the near-duplicate bench's queries (index/bench_duplicates.py).

Each transform takes a grayscale or RGB Pillow image and a seeded numpy Generator (for the random
parts: a shift's direction, a crop's offset, a rotation's sign, noise) and returns the altered
image, or the JPEG file for the JPEG transforms; make_copies gives every copy as the bytes a user
would have on disk: JPEG for the JPEG transforms, PNG otherwise. Every
method under test reads those bytes its own way (hashae through hashae's decoder, as `hashae
query` does; ImageHash and PDQ through Pillow), so a copy's size change (resize, crop, pad) is
seen as a user's program would see it.

Geometric transforms keep the background the images have (black for Fashion-MNIST): the area
a shift, pad or rotation uncovers is filled with the image's corner value.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

Altered = Image.Image | bytes  # the altered image, or the file itself when its format is the change (JPEG)
Transform = Callable[[Image.Image, np.random.Generator], Altered]


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(quality: int) -> Transform:
    def transform(img: Image.Image, rng: np.random.Generator) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    return transform


def _background(img: Image.Image) -> int | tuple[int, ...]:
    """The value of the top-left pixel: what uncovered areas are filled with."""
    return img.getpixel((0, 0))


def _resize(scale: float) -> Transform:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        return img.resize(size, Image.Resampling.BILINEAR)

    return transform


def _enhance(kind: type, factor: float) -> Transform:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return kind(img).enhance(factor)

    return transform


def _blur(radius: float) -> Transform:
    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius))

    return transform


def _noise(sigma: float) -> Transform:
    """Gaussian noise of standard deviation sigma (on the [0, 1] scale), clipped."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 255.0 * sigma, size=np.asarray(img).shape)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), img.mode)

    return transform


def _shift(pixels: int) -> Transform:
    """Translated by `pixels` along one axis, the direction (left, right, up, down) drawn at random."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        dx, dy = ((pixels, 0), (-pixels, 0), (0, pixels), (0, -pixels))[int(rng.integers(4))]
        moved = Image.new(img.mode, img.size, _background(img))
        moved.paste(img, (dx, dy))
        return moved

    return transform


def _crop(share: float) -> Transform:
    """A window (1 - share) of the width and height, at a random offset: the copy is smaller."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = round(img.width * (1 - share)), round(img.height * (1 - share))
        left, top = int(rng.integers(img.width - width + 1)), int(rng.integers(img.height - height + 1))
        return img.crop((left, top, left + width, top + height))

    return transform


def _pad(share: float) -> Transform:
    """A border adding `share` of the width and height, split at random between the two sides."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        width, height = round(img.width * (1 + share)), round(img.height * (1 + share))
        left, top = int(rng.integers(width - img.width + 1)), int(rng.integers(height - img.height + 1))
        padded = Image.new(img.mode, (width, height), _background(img))
        padded.paste(img, (left, top))
        return padded

    return transform


def _rotate(degrees: float) -> Transform:
    """Rotated by `degrees` about the centre, clockwise or anticlockwise at random, same size."""

    def transform(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        angle = degrees if rng.integers(2) else -degrees
        return img.rotate(angle, Image.Resampling.BILINEAR, fillcolor=_background(img))

    return transform


def _flip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _identity(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img


TRANSFORMS: dict[str, Transform] = {
    "identity": _identity,
    "jpeg q50": _jpeg(50),
    "jpeg q30": _jpeg(30),
    "resize x0.5": _resize(0.5),
    "brightness +30%": _enhance(ImageEnhance.Brightness, 1.3),
    "brightness -30%": _enhance(ImageEnhance.Brightness, 0.7),
    "contrast +30%": _enhance(ImageEnhance.Contrast, 1.3),
    "contrast -30%": _enhance(ImageEnhance.Contrast, 0.7),
    "blur r1": _blur(1.0),
    "noise 0.05": _noise(0.05),
    "shift 2px": _shift(2),
    "crop 10%": _crop(0.10),
    "pad 10%": _pad(0.10),
    "rotate 5": _rotate(5),
    "rotate 15": _rotate(15),
    "hflip": _flip,
}
PHOTOMETRIC = ("jpeg q50", "jpeg q30", "resize x0.5", "brightness +30%", "brightness -30%", "contrast +30%", "contrast -30%", "blur r1", "noise 0.05")
GEOMETRIC = ("shift 2px", "crop 10%", "pad 10%", "rotate 5", "rotate 15", "hflip")


def make_copies(images: list[Image.Image], transform: str, *, seed: int = 0) -> list[bytes]:
    """The files of one transform applied to each image, its random draws seeded by (seed, transform)."""
    return [altered if isinstance(altered, bytes) else _png(altered) for altered in alter(images, transform, seed=seed)]


def alter(images: list[Image.Image], transform: str, *, seed: int = 0) -> list[Altered]:
    """make_copies before the lossless copies are written as PNG: each an altered image, or the
    file's bytes for the JPEG transforms (a PNG decodes to exactly its image, so a caller that only
    needs the pixels can skip writing and reading it)."""
    if transform not in TRANSFORMS:
        raise KeyError(f"unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    rng = np.random.default_rng([seed, list(TRANSFORMS).index(transform)])
    return [TRANSFORMS[transform](img, rng) for img in images]
