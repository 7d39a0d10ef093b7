"""`hashae index FOLDER` end to end: bad and unusual files, incremental runs, --retrain.

Every test works on a copy of one small store indexed once per session (conftest: indexed_library,
indexed_flat_folder), so only the tests that must train (--retrain, a fresh store) do.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import draw_images, image_paths, index_quietly, store_state, write_odd_files
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.decode import decode_image
from hashae.errors import DataError
from hashae.index.backends import open_store
from hashae.index.encoder import EncoderStage
from hashae.index.backends.local.store import LocalStore as Store


def info_json(store) -> dict:
    result = CliRunner().invoke(app, ["info", "--store", str(store), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def skipped_reasons(store) -> dict[str, str]:
    return {entry["path"]: entry["reason"] for entry in info_json(store)["skipped"]}


def model_ids(store) -> tuple[int, int]:
    with Store.open(store) as opened:
        generation = opened.snapshot().generation
        return generation.hashing_model, generation.latent_model


def assert_models_load_and_encode_to_the_stored_codes(folder, store) -> None:
    """The store's newest models load (numpy encoder) and give every item its stored code."""
    with open_store(store) as opened:
        view = opened.snapshot()
        models = view.models()
        stage = EncoderStage.load(view.model_dir(models.hashing), view.model_dir(models.latent))
        ids = view.item_ids()
        items = view.items(ids)
        pixels = np.stack([decode_image(folder / items[int(i)].path, size=28, channels=1) for i in ids])
        codes, latents = stage.encode(pixels)
        assert len(ids) and codes.shape == (len(ids), view.settings.bits // 8)
        np.testing.assert_array_equal(codes, view.codes_of(ids))
        np.testing.assert_allclose(latents, view.latents_of(ids), atol=1e-5)


# ------------------------------------------------------------------------- bad and unusual files
def test_fresh_folder_with_bad_files_indexes_the_good_ones(indexed_flat_folder):
    folder, store, odd_good, bad = indexed_flat_folder
    state = store_state(store)
    readable = image_paths(folder) - set(bad)
    assert set(state) == readable
    assert set(odd_good) <= set(state)  # palette, alpha, CMYK, 16-bit, animated GIF, EXIF-rotated
    assert "notes.txt" not in state
    assert all(label is None for _, _, label in state.values())  # no class subfolders, no labels

    document = info_json(store)
    assert {"items", "skipped", "bits", "generation"} <= set(document)
    assert document["items"] == len(readable)
    assert document["bits"] == 32 and document["generation"] == 1
    assert all(set(entry) >= {"path", "reason"} for entry in document["skipped"])
    reasons = {entry["path"]: entry["reason"] for entry in document["skipped"]}
    assert set(reasons) == set(bad)
    for path, word in bad.items():
        assert word in reasons[path], (path, reasons[path])


def test_info_text_lists_each_bad_file_with_its_reason(indexed_flat_folder):
    _, store, _, bad = indexed_flat_folder
    result = CliRunner().invoke(app, ["info", "--store", str(store)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"skipped     {len(bad)}" in result.output
    lines = result.output.splitlines()
    for path, word in bad.items():
        assert any(line.strip().startswith(f"{path}:") and word in line for line in lines), (path, result.output)


def test_bad_files_added_to_an_indexed_folder(library_copy):
    folder, store = library_copy
    before = store_state(store)
    odd_good, bad = write_odd_files(folder)
    summary = index_quietly(store, folder)
    assert not summary.trained
    assert (summary.indexed, summary.skipped, summary.unchanged) == (len(odd_good), len(bad), len(before))
    after = store_state(store)
    assert set(after) == set(before) | set(odd_good)
    assert all(after[path] == before[path] for path in before)
    assert {path for path in odd_good if after[path][2] == "odd"} == set(odd_good)
    reasons = skipped_reasons(store)
    assert set(reasons) == set(bad)
    assert all(word in reasons[path] for path, word in bad.items())


def test_skipped_files_fixed_broken_or_deleted(library_copy):
    folder, store = library_copy
    base = store_state(store)
    (folder / "a_bad.png").write_bytes(b"")
    (folder / "b_bad.jpg").write_text("no image here")
    victim = sorted(base)[0]
    (folder / victim).write_bytes((folder / victim).read_bytes()[:40])  # a good file gets truncated
    summary = index_quietly(store, folder)
    assert summary.skipped == 3 and summary.removed == 0
    assert set(skipped_reasons(store)) == {"a_bad.png", "b_bad.jpg", victim}
    assert set(store_state(store)) == set(base) - {victim}

    draw_images(folder, 1, seed=5, classes=False, prefix="a_bad")  # writes a_bad_0000.png; fix a_bad.png:
    shutil.copy(folder / "a_bad_0000.png", folder / "a_bad.png")
    (folder / "b_bad.jpg").unlink()
    summary = index_quietly(store, folder)
    assert summary.skipped == 1
    assert set(skipped_reasons(store)) == {victim}  # the deleted bad file is no longer listed
    assert set(store_state(store)) == set(base) - {victim} | {"a_bad.png", "a_bad_0000.png"}

    (folder / victim).unlink()
    index_quietly(store, folder)
    assert skipped_reasons(store) == {}


def test_folder_without_readable_images_fails_cleanly(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="fewer than 2 readable images"):
        index_quietly(tmp_path / "store", folder)
    with pytest.raises(DataError, match="not a folder"):
        index_quietly(tmp_path / "store", tmp_path / "missing")


# ------------------------------------------------------------------------------------ incremental
def test_incremental_add_modify_delete(library_copy):
    folder, store = library_copy
    before = store_state(store)
    models = model_ids(store)
    paths = sorted(before)
    deleted, modified, touched = paths[:4], paths[10:13], paths[20:22]
    for path in deleted:
        (folder / path).unlink()
    for i, path in enumerate(modified):  # new pixels under the same name
        draw_images(folder / "tmp", 1, seed=100 + i, classes=False)
        os.replace(folder / "tmp" / "img_0000.png", folder / path)
    for path in touched:  # same bytes, new mtime: the content hash says unchanged
        os.utime(folder / path, ns=(1_000_000_000, 1_000_000_000))
    added = draw_images(folder, 5, seed=7, prefix="new")
    (folder / "tmp").rmdir()

    summary = index_quietly(store, folder)
    assert not summary.trained
    assert (summary.indexed, summary.removed, summary.skipped) == (len(added) + len(modified), len(deleted), 0)
    assert summary.unchanged == len(before) - len(deleted) - len(modified)
    after = store_state(store)
    assert set(after) == image_paths(folder)
    unchanged = set(before) - set(deleted) - set(modified)
    assert all(after[path] == before[path] for path in unchanged)  # same id, code and label
    assert all(after[path][0] not in {row[0] for row in before.values()} for path in modified + added)
    assert model_ids(store) == models  # no retraining
    with Store.open(store) as opened:  # touched files keep their row, with the new mtime recorded
        live = opened.catalogue.live_items()
        assert all(live[path].mtime_ns == 1_000_000_000 for path in touched)

    # The CLI sees the same thing: an unchanged item by id finds itself at distance 0.
    kept = sorted(unchanged)[0]
    result = CliRunner().invoke(
        app, ["query", "--id", str(after[kept][0]), "--store", str(store), "--json", "--radius", "0"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["results"]
    assert {"id": after[kept][0], "path": kept, "distance": 0} in [
        {key: hit[key] for key in ("id", "path", "distance")} for hit in hits
    ]

    # A run with nothing to do changes nothing.
    again = index_quietly(store, folder)
    assert (again.indexed, again.removed, again.unchanged) == (0, 0, len(after))
    assert store_state(store) == after


def test_delete_everything_then_refill(library_copy):
    folder, store = library_copy
    before = store_state(store)
    shutil.rmtree(folder)
    folder.mkdir()
    summary = index_quietly(store, folder)
    assert (summary.indexed, summary.removed) == (0, len(before))
    assert info_json(store)["items"] == 0
    draw_images(folder, 3, seed=9)
    summary = index_quietly(store, folder)
    assert not summary.trained and summary.indexed == 3
    assert set(store_state(store)) == image_paths(folder)


def test_retrain_reencodes_everything(library_copy):
    folder, store = library_copy
    before = store_state(store)
    models = model_ids(store)
    (folder / sorted(before)[0]).unlink()
    summary = index_quietly(store, folder, retrain=True, seed=1)
    assert summary.trained
    assert (summary.indexed, summary.unchanged) == (len(before) - 1, 0)
    after = store_state(store)
    assert set(after) == image_paths(folder)
    old_ids = {row[0] for row in before.values()}
    assert all(row[0] not in old_ids for row in after.values())  # every row encoded anew
    new_models = model_ids(store)
    assert new_models[0] != models[0] and new_models[1] != models[1]
    with Store.open(store) as opened:
        assert opened.catalogue.count_models() == 4
        gen = opened.snapshot().gen
        assert len(opened.catalogue.items_added_in(gen)[0]) == len(after)  # every visible row is new in gen


def test_unrecorded_model_folders_are_removed_by_the_next_run(library_copy):
    """What a run killed between saving its checkpoints and recording them leaves behind."""
    folder, store = library_copy
    models_dir = store / "models"
    recorded = sorted(p.name for p in models_dir.iterdir())
    for leftover in ("hashing-20260101-000000-99", ".latent-20260101-000000-99.tmpabc"):
        (models_dir / leftover).mkdir()
        (models_dir / leftover / "weights.safetensors").write_bytes(b"partial")
    summary = index_quietly(store, folder)
    assert not summary.trained and summary.indexed == 0
    assert sorted(p.name for p in models_dir.iterdir()) == recorded
    assert_models_load_and_encode_to_the_stored_codes(folder, store)


def test_changing_bits_needs_retrain(library_copy):
    folder, store = library_copy
    result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), "--bits", "16", "-q"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "--retrain" in result.stderr, result.output
