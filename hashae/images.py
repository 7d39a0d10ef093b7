"""Small picture helpers shared by generate, inspect, query --sheet and bench plots (Pillow only)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def to_pil(image: np.ndarray, *, scale: int = 1) -> Image.Image:
    """A (C, H, W) float array in [0, 1] (C = 1 or 3) as an RGB picture, enlarged `scale` times."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if array.ndim == 2:
        array = array[None]
    pixels = (array.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    picture = Image.fromarray(pixels, "RGB")
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def captioned_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    captions: Sequence[str] | None = None,
    cols: int | None = None,
    scale: int = 3,
    pad: int = 4,
    title: str | None = None,
) -> Image.Image:
    """Tiles in a grid, each with an optional caption line (or several, split on newlines) under it."""
    tiles = [to_pil(image, scale=scale) for image in images]
    if not tiles:
        raise ValueError("no images to draw")
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    lines = max((c.count("\n") + 1 for c in captions), default=0) if captions else 0
    caption_h = 12 * lines
    tile_w = max(t.width for t in tiles)
    tile_h = max(t.height for t in tiles)
    if captions:
        tile_w = max(tile_w, 6 * max(len(line) for c in captions for line in c.split("\n")))
    title_h = 16 if title else 0
    sheet = Image.new("RGB", (cols * (tile_w + pad) + pad, title_h + rows * (tile_h + caption_h + pad) + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 2), title, fill=INK, font=_font())
    for i, tile in enumerate(tiles):
        x = pad + (i % cols) * (tile_w + pad)
        y = title_h + pad + (i // cols) * (tile_h + caption_h + pad)
        sheet.paste(tile, (x + (tile_w - tile.width) // 2, y))
        if captions:
            draw.multiline_text((x, y + tile_h + 1), captions[i], fill=INK, font=_font(), spacing=1)
    return sheet


def side_by_side(panels: Sequence[Image.Image], *, pad: int = 8) -> Image.Image:
    """Pictures placed left to right on a white background, tops aligned."""
    width = sum(p.width for p in panels) + pad * (len(panels) + 1)
    height = max(p.height for p in panels) + 2 * pad
    out = Image.new("RGB", (width, height), BACKGROUND)
    x = pad
    for panel in panels:
        out.paste(panel, (x, pad))
        x += panel.width + pad
    return out


def bits_strip(bits: np.ndarray, *, cell: int = 6) -> np.ndarray:
    """A boolean code (nbits,) as a (1, cell, nbits*cell) picture: black = 1, white = 0."""
    row = 1.0 - np.asarray(bits, dtype=np.float32)
    return np.kron(row[None, :], np.ones((cell, cell), dtype=np.float32))[None]


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (480, 360),
) -> Image.Image:
    """A plain line chart with markers and a legend: series name -> (xs, ys)."""
    width, height = size
    left, right, top, bottom = 52, 120, 24, 36
    picture = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(picture)
    xs = [float(v) for xs_, _ in series.values() for v in xs_]
    ys = [float(v) for _, ys_ in series.values() for v in ys_]
    x_lo, x_hi = _padded_range(xs)
    y_lo, y_hi = _padded_range(ys)

    def point(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
        py = height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline=INK)
    for tick in np.linspace(y_lo, y_hi, 5):
        _, py = point(x_lo, tick)
        draw.line([left - 3, py, left, py], fill=INK)
        draw.text((4, py - 5), f"{tick:.3g}", fill=INK, font=_font())
    for tick in sorted(set(xs)) if len(set(xs)) <= 8 else np.linspace(x_lo, x_hi, 5):
        px, _ = point(tick, y_lo)
        draw.line([px, height - bottom, px, height - bottom + 3], fill=INK)
        draw.text((px - 8, height - bottom + 5), f"{tick:.3g}", fill=INK, font=_font())
    for i, (name, (sx, sy)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [point(float(a), float(b)) for a, b in zip(sx, sy)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.line([width - right + 8, top + 8 + 14 * i, width - right + 24, top + 8 + 14 * i], fill=colour, width=2)
        draw.text((width - right + 28, top + 2 + 14 * i), name, fill=INK, font=_font())
    draw.text((left, 4), title, fill=INK, font=_font())
    draw.text(((width - right) // 2, height - 14), xlabel, fill=INK, font=_font())
    draw.text((4, top - 14), ylabel, fill=INK, font=_font())
    return picture


def _padded_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    margin = 0.05 * (hi - lo)
    return lo - margin, hi + margin
