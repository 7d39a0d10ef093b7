"""Pictures from the command line: `hashae query --sheet` and `hashae inspect` write PNGs of the
expected size that are not blank."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from serving import cli, small_store

from hashae.index import sheets
from hashae.index.backends import open_store

TILE = 28 * 3  # the 28-pixel images drawn 3 times larger
PAD = 4  # hashae.images.captioned_grid's padding


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory)


@pytest.fixture(scope="module")
def models(store):
    _, store_dir = store
    opened = open_store(store_dir)
    try:
        view = opened.snapshot()
        pair = view.models()
        return view.model_dir(pair.hashing), view.model_dir(pair.latent)
    finally:
        opened.close()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def sheet_tiles(picture: np.ndarray, *, queries: int, tiles_per_query: int):
    """(block, index, tile picture, caption) of each tile of a contact sheet, by its layout."""
    tile_h = sheets.TILE + (sheets.CAPTION_LINES + 1) * sheets.LINE_HEIGHT + 2
    rows = -(-tiles_per_query // sheets.COLUMNS)
    block_h = sheets.PAD + rows * (tile_h + sheets.PAD)
    for block in range(queries):
        for i in range(tiles_per_query):
            x = sheets.PAD + (i % sheets.COLUMNS) * (sheets.TILE + sheets.PAD)
            y = block * block_h + sheets.PAD + (i // sheets.COLUMNS) * (tile_h + sheets.PAD)
            yield block, i, picture[y : y + sheets.TILE, x : x + sheets.TILE], picture[y + sheets.TILE : y + tile_h, x : x + sheets.TILE]


def test_contact_sheet(store, tmp_path):
    _, store_dir = store
    out = tmp_path / "sheet.png"
    text = cli("query", "--id", 1, "--id", 2, "-k", 5, "--store", store_dir, "--sheet", out)
    assert "contact sheet written" in text and out.is_file()
    # one block per query: the query and its 5 hits on one row, each tile captioned under it
    tile_h = sheets.TILE + (sheets.CAPTION_LINES + 1) * sheets.LINE_HEIGHT + 2
    assert Image.open(out).size == (sheets.PAD + 6 * (sheets.TILE + sheets.PAD), 2 * (sheets.PAD + tile_h + sheets.PAD))
    for block, i, tile, caption in sheet_tiles(pixels(out), queries=2, tiles_per_query=6):
        assert tile.std() > 0 and (caption < 128).any(), (block, i)  # a picture, and text under it


def test_contact_sheet_is_a_grid_at_many_results(store, tmp_path):
    images, store_dir = store
    out = tmp_path / "sheet.png"
    cli("query", "--id", 1, "-k", 40, "--store", store_dir, "--sheet", out)
    width, height = Image.open(out).size
    tile_h = sheets.TILE + (sheets.CAPTION_LINES + 1) * sheets.LINE_HEIGHT + 2
    rows = -(-41 // sheets.COLUMNS)  # the query and 40 results, COLUMNS a row
    assert (width, height) == (sheets.PAD + sheets.COLUMNS * (sheets.TILE + sheets.PAD), sheets.PAD + rows * (tile_h + sheets.PAD))
    assert width < 1.5 * height  # a grid, not a strip
    for block, i, tile, caption in sheet_tiles(pixels(out), queries=1, tiles_per_query=41):
        assert tile.std() > 0 and (caption < 128).any(), i


def test_contact_sheet_names_the_files(store, tmp_path):
    """The caption carries the file name: a sheet of items whose files have long, distinct names
    differs from one where they are short (the rest of the caption being equal)."""
    from hashae.index.sheets import _name_lines

    assert _name_lines("train_00042.png") == ["train_00042.png"]
    long = "a-very-long-holiday-photo-name-0042.jpg"
    lines = _name_lines(long)
    assert len(lines) == 2 and all(len(line) <= sheets.CHARS_PER_LINE for line in lines) and "".join(lines).endswith("0042.jpg")


def test_inspect_a_hashing_model(store, models, tmp_path):
    images, _ = store
    hashing, _ = models
    out = tmp_path / "recon.png"
    text = cli("inspect", "--model", hashing, "--data", images, "-n", 5, "--out", out)
    assert "corrupted versions" in text and "code bits" in text
    picture = pixels(out)
    columns = 4  # input, corrupted, reconstruction, reconstruction of the corrupted
    panel_h = 16 + 5 * (TILE + PAD) + PAD  # title, five rows of tiles
    assert picture.shape[0] == panel_h + 2 * 8
    assert picture.shape[1] > columns * (TILE + 2 * PAD) + 2 * 32 * 3  # two columns of 32-bit strips
    assert picture.std() > 0
    for col in range(columns):  # each column of pictures has content
        x = 8 + col * (TILE + 2 * PAD + 8) + PAD
        assert picture[8 + 16 + PAD : 8 + 16 + PAD + TILE, x : x + TILE].std() > 0, col
    strips = picture[:, columns * (TILE + 2 * PAD + 8) + 8 :]
    assert (strips < 60).all(axis=2).any() and (strips > 200).all(axis=2).any()  # black and white bits
    red = (strips[..., 0] > 100) & (strips[..., 1] < 60) & (strips[..., 2] < 60)
    assert red.any()  # bits flipped by the masking noise


def test_inspect_a_vae(store, models, tmp_path):
    images, _ = store
    _, latent = models
    out = tmp_path / "vae.png"
    text = cli("inspect", "--model", latent, "--data", images, "-n", 3, "--out", out)
    assert "code bits" not in text  # no binary code, no corruption: input and reconstruction
    picture = pixels(out)
    assert picture.shape[0] == 16 + 3 * (TILE + PAD) + PAD + 2 * 8
    assert picture.shape[1] == 2 * (TILE + 2 * PAD) + 3 * 8
    assert picture.std() > 0
