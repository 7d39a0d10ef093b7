"""Pictures from the command line: `hashae query --sheet` and `hashae inspect` write PNGs of the
expected size that are not blank."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from serving import cli, small_store

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


def test_contact_sheet(store, tmp_path):
    _, store_dir = store
    out = tmp_path / "sheet.png"
    text = cli("query", "--id", 1, "--id", 2, "-k", 5, "--store", store_dir, "--sheet", out)
    assert "contact sheet written" in text and out.is_file()
    # one strip per query: the query and its 5 hits, each a tile with two caption lines under it
    tile_w, row_h = TILE, PAD + TILE + 2 * 12 + PAD
    assert Image.open(out).size == (6 * (tile_w + PAD) + PAD, 2 * row_h)
    picture = pixels(out)
    assert picture.std() > 0
    for row in range(2):  # every tile holds a picture, not a blank square
        for col in range(6):
            x, y = PAD + col * (tile_w + PAD), PAD + row * row_h
            assert picture[y : y + TILE, x : x + TILE].std() > 0, (row, col)


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
