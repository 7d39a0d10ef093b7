"""Contact sheets: a query and its neighbours as pictures, distance and label under each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hashae.errors import HashaeError
from hashae.images import captioned_grid
from hashae.index.backends.base import Hit
from hashae.index.search import with_metadata


def contact_sheet(engine, answers, out: Path, *, scale: int = 3) -> Path:
    """One row per answer: the query image (or item) first, then its hits in rank order."""
    from PIL import Image

    rows = []
    for answer in answers:
        tiles, captions = [_query_pixels(engine, answer)], [f"query\n{_short(str(answer.query))}"]
        for hit in answer.hits:
            tiles.append(_item_pixels(engine, hit))
            captions.append(f"d={_distance(hit.distance)}\n{_short(hit.label or '-')}")
        rows.append(captioned_grid(tiles, captions=captions, cols=len(tiles), scale=scale))
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    sheet.save(out)  # into an existing folder only: a missing one is the caller's mistake to report
    return Path(out)


def _query_pixels(engine, answer) -> np.ndarray:
    if isinstance(answer.query, int):
        hit = with_metadata(engine.view, [[Hit(answer.query, 0)]])[0][0]
        return _item_pixels(engine, hit)
    return engine.decode(Path(answer.query))


def _item_pixels(engine, hit) -> np.ndarray:
    """The indexed file's pixels; a grey tile when the file has gone since it was indexed."""
    try:
        return engine.decode(engine.source_path(hit))
    except (HashaeError, OSError):
        channels, size = engine.settings.channels, engine.settings.image_size
        return np.full((channels, size, size), 0.5, dtype=np.float32)


def _distance(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _short(text: str, width: int = 14) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]
