"""The Python API (hashae.index.api) on a real store: the same answers as `hashae query`, every kind
of query image, items, stored vectors, encoding with the store's models and with a saved model, and
the near-duplicate groups of `hashae duplicates`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from serving import cli, small_store

from hashae.errors import CheckpointError, DataError, HashaeError
from hashae.index.api import DuplicateGroup, Item, Match, Store, load_model
from hashae.index.duplicates import DuplicatesError
from hashae.index.query import QueryError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    images, store_dir = small_store(tmp_path_factory)
    with Store.open(store_dir) as opened:
        yield images, store_dir, opened


def test_open_describes_the_store(store):
    _, store_dir, opened = store
    assert len(opened) == 200 and opened.generation >= 1 and opened.root == store_dir
    assert opened.settings.image_size == 28 and opened.settings.channels == 1
    assert opened.refresh() is False  # nothing newer committed


def test_query_by_id_is_the_cli_answer(store):
    _, store_dir, opened = store
    item_id = int(opened.ids()[7])
    for options in ({"k": 6}, {"k": 6, "mode": "hybrid"}, {"k": 4, "mode": "latent", "ties": "id"}, {"radius": 3}):
        matches = opened.query(item_id, **options)
        args = ["query", "--id", item_id, "--store", store_dir, "--json"] + [a for key, value in options.items() for a in (("-k" if key == "k" else f"--{key}"), value)]
        line = json.loads(cli(*args))
        assert [(m.rank, m.id, m.path, m.label, m.distance) for m in matches] == [(r["rank"], r["id"], r["path"], r["label"], r["distance"]) for r in line["results"]]
    assert isinstance(matches[0], Match) and matches[0].id == item_id and matches[0].distance == 0


def test_query_by_path_bytes_and_pixels_agree(store):
    images, _, opened = store
    item = next(opened.items())
    assert item.file == images / item.path and item.file.is_file()
    by_path = opened.query(item.file, k=5)
    assert by_path[0].distance == 0 and by_path[0].id == item.id
    assert [m.id for m in opened.query(item.file.read_bytes(), k=5)] == [m.id for m in by_path]
    assert [m.id for m in opened.query(str(item.file), k=5)] == [m.id for m in by_path]
    pixels = opened.pixels(item.file)
    assert pixels.shape == (1, 28, 28) and pixels.dtype == np.float32
    assert [m.id for m in opened.query(pixels, k=5)] == [m.id for m in by_path]
    as_uint8 = np.asarray(np.rint(pixels[0] * 255), dtype=np.uint8)  # (H, W) uint8 as a notebook has it
    assert [m.id for m in opened.query(as_uint8, k=5)] == [m.id for m in by_path]


def test_bad_queries_are_named_errors(store):
    _, _, opened = store
    with pytest.raises(DataError, match="do not fit"):
        opened.query(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        opened.query(np.full((1, 28, 28), 7, np.float32))
    with pytest.raises(DataError, match="not an image"):
        opened.query(b"not a picture")
    with pytest.raises(QueryError, match="987654"):
        opened.query(987654)
    with pytest.raises(QueryError, match="unknown mode"):
        opened.query(int(opened.ids()[0]), mode="cosine")
    with pytest.raises(QueryError, match="cannot search with a dict"):
        opened.query({})


def test_items_codes_and_latents(store):
    _, _, opened = store
    items = list(opened.items())
    assert len(items) == 200 and all(isinstance(i, Item) for i in items)
    assert [i.id for i in items] == opened.ids().tolist()
    label = items[0].label
    assert [i.id for i in opened.items(label=label)] == [i.id for i in items if i.label == label]
    assert opened.item(items[3].id) == items[3]
    with pytest.raises(QueryError):
        opened.item(987654)
    codes, latents = opened.codes(), opened.latents()
    assert codes.shape == (200, opened.settings.bits // 8) and codes.dtype == np.uint8
    assert latents.shape == (200, opened.settings.latent_dim) and latents.dtype == np.float32
    assert (opened.codes([items[5].id]) == codes[5]).all()


def test_encode_gives_the_stored_vectors(store):
    _, _, opened = store
    items = list(opened.items())[:6]
    codes, latents = opened.encode([item.file for item in items])
    ids = [item.id for item in items]
    assert (codes == opened.codes(ids)).all()
    assert np.allclose(latents, opened.latents(ids), atol=1e-5)
    stacked = np.stack([opened.pixels(item.file) for item in items])
    assert (opened.encode(stacked)[0] == codes).all()


def test_duplicates_are_the_groups_hashae_duplicates_lists(store):
    _, store_dir, opened = store
    default = json.loads(cli("duplicates", "--store", store_dir, "--json", "-q"))
    assert [group.as_dict() for group in opened.duplicates()] == default["groups"]
    # the calibrated threshold groups no pair of these 200 distinct images: a loose codes-only one does
    loose = json.loads(cli("duplicates", "--store", store_dir, "--json", "-q", "--codes-only", "--threshold", 4))
    groups = opened.duplicates(radius=4, codes_only=True)
    assert groups and [group.as_dict() for group in groups] == loose["groups"]
    ids = set(opened.ids().tolist())
    for group in groups:
        assert isinstance(group, DuplicateGroup) and len(group) >= 2 and group.anchor == group.members[0]
        assert (group.anchor.hamming, group.anchor.latent) == (0, 0.0) and all(m.hamming <= 4 and m.id in ids for m in group.members)
    assert len(opened.duplicates(radius=4, latent_max=0.0)) <= len(groups)  # the latent check only takes pairs away


def test_a_store_measures_its_own_duplicates_threshold(store):
    _, store_dir, opened = store
    calibration = opened.calibrate_duplicates(sample=100, radius=3, precision=0.9)
    assert calibration.originals == 100 and calibration.precision >= 0.9 and calibration.threshold.radius == 3
    measured = json.loads(cli("duplicates", "--store", store_dir, "--json", "-q", "--calibrate", "--sample", 100, "--threshold", 3, "--precision", 0.9))
    assert measured["calibration"] == calibration.as_dict()
    groups = opened.duplicates(radius=3, latent_max=calibration.threshold.latent_max)
    assert [group.as_dict() for group in groups] == measured["groups"]


def test_bad_duplicate_thresholds_are_named_errors(store):
    _, _, opened = store
    with pytest.raises(DuplicatesError, match=f"between 0 and {opened.settings.bits}"):
        opened.duplicates(radius=opened.settings.bits + 1)
    with pytest.raises(DuplicatesError, match="non-negative"):
        opened.duplicates(latent_max=-1.0)
    with pytest.raises(DuplicatesError, match="either codes_only or latent_max"):
        opened.duplicates(latent_max=0.1, codes_only=True)


def test_load_model_encodes_arrays(store):
    _, _, opened = store
    models = sorted(p for p in (opened.root / "models").iterdir() if p.is_dir())
    for folder in models:
        model = load_model(folder)
        x = np.stack([opened.pixels(item.file) for item in list(opened.items())[:4]])
        codes, embedded = model.encode(x.reshape(len(x), *model.input_shape))
        assert codes.dtype == np.uint8 and embedded.shape[0] == 4
    with pytest.raises(CheckpointError):
        load_model(opened.root)  # the store folder is not a model


def test_missing_store_is_a_named_error(tmp_path):
    with pytest.raises(HashaeError, match="hashae index"):
        Store.open(tmp_path / "nothing")


def test_importing_hashae_does_not_load_the_api_or_torch():
    code = (
        "import sys, hashae\n"
        "assert 'hashae.index.api' not in sys.modules and 'hashae.index' not in sys.modules\n"
        "import hashae.index.api\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
