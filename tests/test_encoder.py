"""The encoder stage and the executors: codes that do not depend on the batch, numpy only (no torch,
in this process or in workers), and the same results bit for bit from every executor."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import draw_images, index_quietly, store_state

from hashae.decode import decode_image
from hashae.folders import list_images
from hashae.index.backends import open_store
from hashae.index.encoder import EncoderStage, ShardEncoder
from hashae.index.executors import ProcessExecutor, SequentialExecutor, WorkerDied, make_executor
from hashae.reader import ShardReader, make_shards


def stage_of(store) -> EncoderStage:
    with open_store(store) as opened:
        view = opened.snapshot()
        models = view.models()
        return EncoderStage.load(view.model_dir(models.hashing), view.model_dir(models.latent))


def folder_pixels(folder) -> tuple[list[str], np.ndarray]:
    paths = [image.relpath for image in list_images(folder)]
    return paths, np.stack([decode_image(folder / path, size=28, channels=1) for path in paths])


# ------------------------------------------------------------------------- codes and batches
def test_every_file_encoded_alone_gets_its_batched_and_stored_code(indexed_library):
    """Issue 14: an indexed file queried again gets exactly its stored code, over a whole folder."""
    folder, store = indexed_library
    stage = stage_of(store)
    paths, pixels = folder_pixels(folder)
    batched, latents = stage.encode(pixels)
    alone = np.concatenate([stage.encode(pixels[i : i + 1])[0] for i in range(len(pixels))])
    np.testing.assert_array_equal(alone, batched)
    for size in (3, 16, 64):
        np.testing.assert_array_equal(np.concatenate([stage.encode(pixels[s : s + size])[0] for s in range(0, len(pixels), size)]), batched)
    state = store_state(store)
    np.testing.assert_array_equal(batched, np.frombuffer(b"".join(state[path][1] for path in paths), np.uint8).reshape(batched.shape))
    assert batched.shape == (len(paths), 4) and latents.shape == (len(paths), 32) and latents.dtype == np.float32


def test_a_unit_on_the_edge_of_its_threshold_gets_one_bit_in_any_batch(indexed_library):
    """The failure of issue 14 made on purpose: a threshold placed between a unit's value in a batch
    and its value alone flips the plain float32 encoder's bit; the stage's bit does not move."""
    folder, store = indexed_library
    stage = stage_of(store)
    _, pixels = folder_pixels(folder)
    hashing = stage.hashing
    batched = hashing.pre_activation(pixels)
    alone = np.concatenate([hashing.pre_activation(pixels[i : i + 1]) for i in range(len(pixels))])
    rows, units = np.nonzero(batched != alone)
    if not len(rows):
        pytest.skip("this BLAS rounds every row the same in any batch")
    edgy = copy.copy(hashing)
    edgy.bit_threshold = hashing.bit_threshold.copy()
    row, unit = rows[0], units[0]
    edgy.bit_threshold[unit] = (np.float64(batched[row, unit]) + np.float64(alone[row, unit])) / 2
    assert (edgy.codes(pixels)[row] != edgy.codes(pixels[row : row + 1])[0]).any()  # the old encoder flips
    edge_stage = EncoderStage(edgy, stage.latent)
    codes = edge_stage.encode(pixels)[0]
    np.testing.assert_array_equal(edge_stage.encode(pixels[row : row + 1])[0][0], codes[row])
    for size in (2, 7, 50):
        start = max(0, row - size // 2)
        part = edge_stage.encode(pixels[start : start + size])[0]
        np.testing.assert_array_equal(part[row - start], codes[row])


def test_encoder_stage_never_imports_torch(indexed_library):
    folder, store = indexed_library
    with open_store(store) as opened:
        models = opened.snapshot().models()
        dirs = [str(opened.model_dir(models.hashing)), str(opened.model_dir(models.latent))]
    image = str(folder / list_images(folder)[0].relpath)
    script = (
        "import sys\n"
        "from hashae.decode import decode_image\n"
        "from hashae.index.encoder import EncoderStage\n"
        f"stage = EncoderStage.load({dirs[0]!r}, {dirs[1]!r})\n"
        f"codes, latents = stage.encode(decode_image({image!r}, size=28, channels=1)[None])\n"
        "print(codes.shape, latents.shape, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(1,", "4)", "(1,", "32)", "False"]


# -------------------------------------------------------------------------------- executors
def test_executors_give_the_same_results_bit_for_bit_and_workers_never_import_torch(indexed_library):
    folder, store = indexed_library
    with open_store(store) as opened:
        models = opened.snapshot().models()
        task = ShardEncoder(ShardReader(size=28, channels=1), str(opened.model_dir(models.hashing)), str(opened.model_dir(models.latent)))
    shards = make_shards(folder, list_images(folder), shard_size=16)
    sequential = list(SequentialExecutor().map(task, shards))
    with ProcessExecutor(workers=2) as executor:
        parallel = list(executor.map(task, shards))
        probes = list(executor.map(eval, ["(__import__('os').getpid(), 'torch' in __import__('sys').modules)"] * 16))
    assert len(parallel) == len(sequential) == len(shards)
    for one, other in zip(sequential, parallel):
        assert one.files == other.files and one.skipped == other.skipped
        np.testing.assert_array_equal(one.codes, other.codes)
        np.testing.assert_array_equal(one.latents, other.latents)
    assert "torch" in sys.modules  # this test process has it (conftest) ...
    assert not any(has_torch for _, has_torch in probes)  # ... its workers never do


def test_process_executor_keeps_the_order_of_the_items():
    with make_executor("processes", workers=2) as executor:
        assert list(executor.map(abs, [-i for i in range(50)])) == list(range(50))
        assert list(executor.map(abs, [])) == []
    assert make_executor("auto", workers=2, work=10, auto_threshold=100).name == "sequential"
    assert make_executor("auto", workers=2, work=100, auto_threshold=100).name == "processes"
    assert make_executor("auto", workers=1, work=100, auto_threshold=100).name == "sequential"


def test_index_with_processes_equals_index_in_this_process(indexed_library, tmp_path):
    """The whole pipeline through both executors: the same ids, codes, labels, latents and skipped files."""
    folder, store = indexed_library
    results = {}
    for executor in ("sequential", "processes"):
        copy_folder, copy_store = tmp_path / executor / "images", tmp_path / executor / "store"
        shutil.copytree(folder, copy_folder)
        shutil.copytree(store, copy_store)
        draw_images(copy_folder, 70, seed=11, prefix="added")
        (copy_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        summary = index_quietly(copy_store, copy_folder, executor=executor, workers=2, batch_size=16)
        assert summary.executor.startswith(executor) and summary.indexed == 70 and summary.skipped == 1
        with open_store(copy_store) as opened:
            view = opened.snapshot()
            ids = view.item_ids()
            results[executor] = (store_state(copy_store), view.latents_of(ids), json.dumps([s.reason for s in opened.skipped()]))
    (state_a, latents_a, skipped_a), (state_b, latents_b, skipped_b) = results.values()
    assert state_a == state_b and skipped_a == skipped_b
    np.testing.assert_array_equal(latents_a, latents_b)


def test_workers_of_a_script_that_imports_torch_do_not(tmp_path):
    """multiprocessing would make each worker import the calling script (and so torch): not ours."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import torch, sys\n"
        "from hashae.index.executors import ProcessExecutor\n"
        "probe = \"('torch' in __import__('sys').modules, hasattr(__import__('sys').modules['__mp_main__'], 'probe'))\"\n"
        "with ProcessExecutor(workers=2) as executor:\n"
        "    print(sorted(set(executor.map(eval, [probe] * 8))))\n"
        "print(hasattr(sys.modules['__main__'], '__file__'))\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[(False, False)]", "True"]


def test_a_worker_that_dies_is_one_clear_error():
    with ProcessExecutor(workers=2) as executor, pytest.raises(WorkerDied, match="worker process died"):
        list(executor.map(os._exit, [3, 3]))
