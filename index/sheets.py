"""Contact sheets: each query and its neighbours as a grid of pictures made from the original
files, with the rank, distance, file name and label under each."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hashae.errors import HashaeError
from hashae.index.backends.base import Hit
from hashae.index.pictures import shrunk_picture
from hashae.index.search import with_metadata

TILE = 128  # a picture's box in pixels (pictures keep their proportions inside it)
COLUMNS = 8  # results per row
PAD = 8
CAPTION_LINES = 3
LINE_HEIGHT = 12
CHARS_PER_LINE = TILE // 6  # the default bitmap font is 6 px wide
BACKGROUND, TILE_BACKGROUND, INK, MUTED = (255, 255, 255), (236, 238, 242), (20, 20, 20), (110, 114, 124)


def contact_sheet(engine, answers, out: Path) -> Path:
    """One block per answer: the query's picture and name, then its hits in rank order, COLUMNS to
    a row. Written as PNG to out (into an existing folder only)."""
    blocks = [_answer_block(engine, answer) for answer in answers]
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks)), BACKGROUND)
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height
    sheet.save(out, format="PNG")  # a missing folder is the caller's mistake to report, never made here
    return Path(out)


def _answer_block(engine, answer) -> Image.Image:
    tiles = [_tile(_query_picture(engine, answer), _query_caption(engine, answer), query=True)]
    for rank, hit in enumerate(answer.hits, start=1):
        caption = [f"#{rank}  d={_distance(hit.distance)}", *_name_lines(Path(hit.path or "").name), _short(hit.label or "-")]
        tiles.append(_tile(_hit_picture(engine, hit), caption[:CAPTION_LINES + 1]))
    columns = min(COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    tile_w, tile_h = tiles[0].size
    block = Image.new("RGB", (PAD + columns * (tile_w + PAD), PAD + rows * (tile_h + PAD)), BACKGROUND)
    for i, tile in enumerate(tiles):
        block.paste(tile, (PAD + (i % columns) * (tile_w + PAD), PAD + (i // columns) * (tile_h + PAD)))
    ImageDraw.Draw(block).line([(0, block.height - 1), (block.width, block.height - 1)], fill=TILE_BACKGROUND)
    return block


def _tile(picture: Image.Image | None, caption: list[str], *, query: bool = False) -> Image.Image:
    """A TILE-square box with the picture centred in it (or "file gone"), and the caption under it."""
    tile = Image.new("RGB", (TILE, TILE + (CAPTION_LINES + 1) * LINE_HEIGHT + 2), BACKGROUND)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, TILE - 1, TILE - 1), fill=TILE_BACKGROUND, outline=(47, 111, 222) if query else None, width=2)
    if picture is None:
        draw.text((TILE // 2, TILE // 2), "file gone", fill=MUTED, font=ImageFont.load_default(), anchor="mm")
    else:
        picture = _upscaled(picture.convert("RGB"))
        tile.paste(picture, ((TILE - picture.width) // 2, (TILE - picture.height) // 2))
    for n, line in enumerate(caption):
        draw.text((1, TILE + 2 + n * LINE_HEIGHT), line, fill=INK if n == 0 else MUTED, font=ImageFont.load_default())
    return tile


def _upscaled(picture: Image.Image) -> Image.Image:
    """Small originals (28 px digits) enlarged by whole steps, pixels kept sharp."""
    factor = (TILE - 4) // max(picture.size)
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST) if factor > 1 else picture


def _query_caption(engine, answer) -> list[str]:
    if isinstance(answer.query, int):
        return [f"query: item {answer.query}", *_name_lines(Path(_query_item(engine, answer).path or "").name)]
    return ["query", *_name_lines(Path(str(answer.query)).name)]


def _query_picture(engine, answer) -> Image.Image | None:
    if isinstance(answer.query, int):
        return _hit_picture(engine, _query_item(engine, answer))
    return _picture(Path(answer.query))


def _query_item(engine, answer) -> Hit:
    return with_metadata(engine.view, [[Hit(answer.query, 0)]])[0][0]


def _hit_picture(engine, hit) -> Image.Image | None:
    return _picture(engine.source_path(hit))


def _picture(path: Path) -> Image.Image | None:
    """The file shrunk to the tile; None when it has gone or cannot be read since it was indexed."""
    try:
        return shrunk_picture(path, side=TILE - 4)[0]
    except (HashaeError, OSError):
        return None


def _name_lines(name: str) -> list[str]:
    """A file name over at most two caption lines (its end kept when longer)."""
    if len(name) <= CHARS_PER_LINE:
        return [name]
    if len(name) <= 2 * CHARS_PER_LINE:
        return [name[:CHARS_PER_LINE], name[CHARS_PER_LINE:]]
    tail = name[-(2 * CHARS_PER_LINE - 1):]
    return ["…" + tail[: CHARS_PER_LINE - 1], tail[CHARS_PER_LINE - 1:]]


def _distance(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _short(text: str) -> str:
    return text if len(text) <= CHARS_PER_LINE else "…" + text[-(CHARS_PER_LINE - 1):]
