"""Pictures of indexed files for people to look at (the page's thumbnails, contact sheets): the
original decoded with the indexer's hardened reader (regular files only, a pixel cap before any
pixel is allocated, the EXIF orientation applied), in its own colours and proportions."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from hashae.decode import loaded_image, standard_mode


def shrunk_picture(path: str | os.PathLike, *, side: int) -> tuple[Image.Image, str]:
    """The image file shrunk to fit side x side with its proportions kept (never enlarged), as L,
    LA, RGB or RGBA, and its format ("JPEG", "PNG", ...). ImageDecodeError when it cannot be read."""
    with loaded_image(path, draft=(None, side)) as (img, _):
        file_format = img.format
        shown = _displayable(img)
        shown.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return shown, file_format


def _displayable(img: Image.Image) -> Image.Image:
    """L, LA, RGB or RGBA, as a browser shows them (16-bit and float grey scaled to 8 bits)."""
    if img.mode.startswith("I") or img.mode == "F":
        scale = np.float32(255.0 if img.mode == "F" else 255.0 / 65535)  # float grey is taken as [0, 1]
        values = np.clip(np.asarray(img.convert("F"), dtype=np.float32) * scale, 0, 255)
        return Image.fromarray(values.astype(np.uint8), mode="L")
    channels = 1 if img.mode in ("1", "L", "LA", "La") else 3
    return standard_mode(img, channels)
