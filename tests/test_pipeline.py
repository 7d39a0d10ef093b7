"""`hashae index FOLDER` end to end: bad and unusual files, incremental runs, --retrain.

Every test works on a copy of one small store indexed once per session (conftest: indexed_library,
indexed_flat_folder), so only the tests that must train (--retrain, a fresh store) do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import LIBRARY_SIZE, draw_images, image_paths, index_quietly, store_state, write_odd_files
from permissions import unlistable
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

    # A run with nothing to do changes nothing: no new generation either (issue 15).
    again = index_quietly(store, folder)
    assert (again.indexed, again.removed, again.unchanged) == (0, 0, len(after))
    assert (again.committed, again.generation) == (False, summary.generation) and info_json(store)["generation"] == summary.generation
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


# ------------------------------------------------------------------ one read, one decode per file
COUNTING_RUN = r"""
import collections, hashlib, json, sys
folder, store = sys.argv[1], sys.argv[2]
opened = collections.Counter()

def audit(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(folder + "/"):
        opened[args[0][len(folder) + 1 :]] += 1

sys.addaudithook(audit)
import hashae.reader as reader

decoded = collections.Counter()
decode_into = reader.decode_into

def counting_decode_into(data, out):
    decoded[hashlib.blake2b(data, digest_size=16).hexdigest()] += 1
    return decode_into(data, out)

reader.decode_into = counting_decode_into
import hashae.index.pipeline as pipeline

indexing = {}  # the opens of the index run itself, before the duplicates threshold is measured
measure = pipeline._measure_duplicates_threshold

def note_then_measure(*args, **kwargs):
    indexing.update(opened)
    return measure(*args, **kwargs)

pipeline._measure_duplicates_threshold = note_then_measure
from hashae.cli.main import app

app(["index", folder, "--store", store, "--epochs", "1", "--device", "cpu", "-q", "--json", "--executor", "sequential"], standalone_mode=False)
print(json.dumps({"opened": indexing, "decoded": decoded, "all_opened": opened}))
"""


def test_a_first_run_reads_and_decodes_each_file_once(tmp_path):
    """Issue 10: training and encoding both take their pixels from one read of each file (the
    channels are probed from decoded files too, not from headers read apart)."""
    folder = tmp_path / "images"
    draw_images(folder, 40, seed=2)
    good, bad = write_odd_files(folder)
    result = subprocess.run([sys.executable, "-c", COUNTING_RUN, str(folder), str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary, counts = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert summary["trained"] and summary["indexed"] == 40 + len(good) and summary["skipped"] == len(bad)
    files = sorted(image_paths(folder))
    assert counts["opened"] == {path: 1 for path in files}
    contents = Counter(hashlib.blake2b((folder / path).read_bytes(), digest_size=16).hexdigest() for path in files)
    assert counts["decoded"] == dict(contents)
    # then the duplicates threshold is measured on altered copies of (here) every indexed file: one more read each
    assert counts["all_opened"] == {path: 2 if path not in bad else 1 for path in files}
    assert "duplicates threshold" in summary["stages"] and len(list((tmp_path / "store").glob("models/latent-*/duplicates-calibration.json"))) == 1


# ---------------------------------------------------------------- what a folder can hold (issue 14)
def test_odd_entries_are_recorded_and_odd_names_indexed(library_copy):
    folder, store = library_copy
    before = store_state(store)
    os.mkfifo(folder / "pipe.png")
    os.symlink(folder / "missing.png", folder / "dangling.png")
    os.symlink("loop.png", folder / "loop.png")
    draw_images(folder / "album.png", 2, seed=3, classes=False, prefix="inside")
    with open(folder / "huge.png", "wb") as file:
        file.truncate(6 << 30)  # sparse: refused by its size, never read
    odd_folder, odd_file = os.fsdecode(b"x\xff"), os.fsdecode(b"bad\xfe.png")
    draw_images(folder / odd_folder, 1, seed=4, classes=False)
    shutil.copy(folder / odd_folder / "img_0000.png", folder / odd_file)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the index run blocked"))
    signal.alarm(300)
    try:
        summary = index_quietly(store, folder)
    finally:
        signal.alarm(0)
    added = {"album.png/inside_0000.png", "album.png/inside_0001.png", f"{odd_folder}/img_0000.png", odd_file}
    assert (summary.indexed, summary.removed) == (len(added), 0)
    state = store_state(store)
    assert set(state) == set(before) | added
    assert state[f"{odd_folder}/img_0000.png"][2] == odd_folder and state[odd_file][2] is None
    assert skipped_reasons(store) == {
        "album.png": "is a folder, not an image file (its images are indexed)",
        "dangling.png": "broken symbolic link (its target is missing)",
        "huge.png": "file too large: 6144.0 MiB (the limit is 64.0 MiB; see --max-file-size)",
        "loop.png": "symbolic link loop",
        "pipe.png": "not a regular file (a FIFO)",
    }
    result = CliRunner().invoke(app, ["query", "--id", str(state[odd_file][0]), "--store", str(store), "--json", "--radius", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert odd_file in {hit["path"] for hit in json.loads(result.stdout)["results"]}
    again = index_quietly(store, folder)
    assert (again.indexed, again.committed, again.generation) == (0, False, summary.generation)


def test_items_of_a_folder_that_cannot_be_listed_are_kept(library_copy):
    folder, store = library_copy
    before = store_state(store)
    hidden = sorted(path.name for path in folder.iterdir())[0]
    draw_images(folder, 3, seed=8, prefix="new")
    command = [sys.executable, "-m", "hashae.cli.main", "index", str(folder), "--store", str(store), "-q", "--json", "--executor", "sequential"]
    with unlistable(folder / hidden) as run_as:
        result = subprocess.run(run_as(command), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["indexed"], summary["removed"]) == (3, 0)
    assert set(store_state(store)) == set(before) | set(image_paths(folder))
    assert skipped_reasons(store) == {hidden: "cannot list the folder (Permission denied)"}
    summary = index_quietly(store, folder)  # listed again: the note goes, the items never went
    assert (summary.indexed, summary.removed) == (0, 0) and skipped_reasons(store) == {}


def test_max_file_size_option(library_copy):
    folder, store = library_copy
    draw_images(folder, 2, seed=12, prefix="new")
    result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), "-q", "--json", "--max-file-size", "0.00005"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 2  # the items already there are not read again
    assert all(reason.startswith("file too large") and "the limit is 52 bytes" in reason for reason in skipped_reasons(store).values())


# ------------------------------------------------------------------------------ the store's folder
def test_a_store_refuses_another_folder_unless_repointed(library_copy, tmp_path):
    folder, store = library_copy
    index_quietly(store, folder)  # the copy of the store records the copy of its folder
    other = tmp_path / "other"
    draw_images(other, 4, seed=21)
    result = CliRunner().invoke(app, ["index", str(other), "--store", str(store), "-q"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(folder.resolve()) in result.stderr and "--repoint" in result.stderr and "--store" in result.stderr
    summary = index_quietly(store, other, repoint=True)
    assert (summary.indexed, summary.removed) == (4, LIBRARY_SIZE)
    assert set(store_state(store)) == image_paths(other)
    assert info_json(store)["items"] == 4


def test_a_relative_store_path(library_copy, monkeypatch):
    folder, store = library_copy
    monkeypatch.chdir(folder.parent)
    shutil.rmtree(store)
    draw_images(folder, 1, seed=30, prefix="extra")
    summary = index_quietly(Path("store"), Path("images"))
    assert summary.trained and summary.indexed == LIBRARY_SIZE + 1
    assert_models_load_and_encode_to_the_stored_codes(folder, store)


# ------------------------------------------------------------------------------------ models (issue 14)
def test_retrain_works_whatever_state_the_old_models_are_in(library_copy):
    folder, store = library_copy
    shutil.rmtree(store / "models")
    result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), "-q"], catch_exceptions=False)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "--retrain" in result.stderr, result.stderr
    summary = index_quietly(store, folder, retrain=True)
    assert summary.trained and summary.indexed == LIBRARY_SIZE
    assert_models_load_and_encode_to_the_stored_codes(folder, store)
