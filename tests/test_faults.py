"""What a disk, a damaged file or a kill can do to a store: never a traceback, never a lost item.

Real processes throughout (`hashae ...` in a subprocess): a full disk (a small tmpfs when this
process may mount one, and always a file size limit, RLIMIT_FSIZE, which makes writes fail with
EFBIG), a damaged catalogue (a name that is not text, pages overwritten), model files changed after
they were recorded, and random SIGKILLs of `hashae index` while readers read (benchmarks/soak.py
runs the same trials for minutes).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from faults import ENV, REPO, Readers, Tally, add_files, committed_state, finish_and_compare, hashae, killed_runs, run_hashae
from permissions import limited

FREE_SPACE = "free some space"


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The run failed with exit 1 and exactly one line on stderr (no traceback): that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    return lines[0]


def first_model_dir(store: Path, role: str = "hashing") -> Path:
    from hashae.index.backends import open_store

    with open_store(store) as opened:
        pair = opened.latest_models()
        return store / getattr(pair, role).dir


# ----------------------------------------------------------------------------------------------
# a full disk


@contextmanager
def small_disk(where: Path, *, size_mb: int):
    """A tmpfs of size_mb mounted at where (root only); skips the test where it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the RLIMIT_FSIZE test covers a full disk")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_leaving(folder: Path, free_bytes: int) -> None:
    """Write a filler file so that about free_bytes stay free on folder's file system."""
    stats = os.statvfs(folder)
    with open(folder / "filler", "wb") as filler:
        filler.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free_bytes))


def test_a_full_disk_is_one_line_and_loses_nothing(library_copy, tmp_path: Path) -> None:
    folder, store = library_copy
    with small_disk(tmp_path / "disk", size_mb=32) as disk:
        shutil.copytree(store, disk / "store")  # the folder beside its store, as library_copy has it
        shutil.copytree(folder, disk / "images")
        folder, store = disk / "images", disk / "store"
        before = committed_state(store)
        add_files(folder, batch=1, good=150, rng=np.random.default_rng(0))
        fill_leaving(disk, 16 * 1024)
        line = one_error_line(run_hashae("index", folder, "--store", store, "-q", "--executor", "sequential"))
        assert "full" in line and FREE_SPACE in line, line
        line = one_error_line(run_hashae("index", folder, "--store", store, "-q", "--retrain", "--epochs", "1", "--executor", "sequential"))
        assert "full" in line and FREE_SPACE in line, line  # a checkpoint (safetensors) or the catalogue
        assert committed_state(store) == before
        (disk / "filler").unlink()
        assert run_hashae("index", folder, "--store", store, "-q", "--executor", "sequential").returncode == 0
        gen, state = committed_state(store)
        assert gen == before[0] + 1 and set(before[1]) < set(state)
        assert run_hashae("check", "--store", store).returncode == 0


def test_a_file_size_limit_is_one_line_and_loses_nothing(library_copy) -> None:
    """RLIMIT_FSIZE: the disk-full path any user can provoke (EFBIG instead of ENOSPC)."""
    folder, store = library_copy
    before = committed_state(store)
    add_files(folder, batch=1, good=150, rng=np.random.default_rng(1))
    limit = (store / "catalogue.db").stat().st_size + 4096
    for extra in ([], ["--retrain", "--epochs", "1"]):
        command = hashae("index", folder, "--store", store, "-q", "--executor", "sequential", *extra)
        done = subprocess.run(limited(command, file_size_limit=limit), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
        line = one_error_line(done)
        assert FREE_SPACE in line, line
    assert committed_state(store) == before
    assert run_hashae("index", folder, "--store", store, "-q", "--executor", "sequential").returncode == 0
    assert set(before[1]) < set(committed_state(store)[1])


# ----------------------------------------------------------------------------------------------
# a damaged catalogue


def test_a_name_that_is_not_text_is_one_line_and_found_by_check(library_copy) -> None:
    folder, store = library_copy
    with sqlite3.connect(store / "catalogue.db") as db:
        row = db.execute("SELECT id FROM items ORDER BY id LIMIT 1").fetchone()[0]
        db.execute("UPDATE items SET path = CAST(X'6261645FFF2E706E67' AS TEXT) WHERE id = ?", (row,))
    line = one_error_line(run_hashae("index", folder, "--store", store, "-q"))
    assert "damaged" in line and "hashae check" in line, line
    done = run_hashae("check", "--store", store)
    assert done.returncode == 1 and f"items row {row}" in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr


def test_a_malformed_catalogue_is_one_line_and_found_by_check(library_copy) -> None:
    folder, store = library_copy
    catalogue = store / "catalogue.db"
    with sqlite3.connect(catalogue) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(catalogue.read_bytes())
    for page in range(2, pages):  # every page but the first (the header and the schema's root)
        data[page * page_size + 8 : page * page_size + 200] = os.urandom(192)
    catalogue.write_bytes(bytes(data))
    for command in (["index", folder, "--store", store, "-q"], ["query", next(folder.rglob("*.png")), "--store", store]):
        line = one_error_line(run_hashae(*command))
        assert "damaged" in line or "malformed" in line, line
    done = run_hashae("check", "--store", store)
    assert done.returncode == 1 and "problem:" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "rebuild" in done.stderr.strip().splitlines()[-1], done.stderr


def test_check_is_read_only_and_passes_on_a_good_store(library_copy) -> None:
    _, store = library_copy
    files = {path: path.read_bytes() for path in store.rglob("*") if path.is_file() and "-shm" not in path.name}
    done = run_hashae("check", "--store", store)
    assert done.returncode == 0 and done.stdout.startswith("ok: "), done.stderr
    assert {path: path.read_bytes() for path in files} == files


# ----------------------------------------------------------------------------------------------
# model files changed after they were recorded


def test_models_carry_digests_checked_on_every_load(library_copy) -> None:
    folder, store = library_copy
    weights = first_model_dir(store) / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(20):  # the case: 20 flipped bytes, still a valid safetensors file
        data[-(i * 97 + 13)] ^= 0x55
    weights.write_bytes(bytes(data))
    for command in (["index", folder, "--store", store, "-q"], ["query", next(folder.rglob("*.png")), "--store", store]):
        line = one_error_line(run_hashae(*command))
        assert str(weights) in line and "--retrain" in line, line
    checked = run_hashae("check", "--store", store).stderr
    assert str(weights) in checked and "rebuild" not in checked, checked  # the models, not the catalogue
    assert run_hashae("index", folder, "--store", store, "-q", "--retrain", "--epochs", "1", "--executor", "sequential").returncode == 0
    assert run_hashae("check", "--store", store).returncode == 0


def test_a_weights_file_of_the_wrong_shapes_fails_at_load(library_copy) -> None:
    """Replaced by another model's weights (a valid file, other shapes) and its digest recorded
    anew: the shape check at load still refuses it in one line, before any query runs."""
    from safetensors.numpy import load_file, save_file

    folder, store = library_copy
    hashing, latent = first_model_dir(store, "hashing"), first_model_dir(store, "latent")
    state = load_file(str(hashing / "weights.safetensors"))
    state["encoder.0.weight"] = np.ones((3, state["encoder.0.weight"].shape[1]), np.float32)
    state["encoder.0.bias"] = np.ones(3, np.float32)
    save_file(state, str(hashing / "weights.safetensors"))
    with sqlite3.connect(store / "catalogue.db") as db:  # as if it had been recorded so
        db.execute("UPDATE models SET info_json = json_remove(info_json, '$.checkpoint_blake2b')")
    line = one_error_line(run_hashae("query", next(folder.rglob("*.png")), "--store", store))
    assert "shape" in line and str(hashing / "weights.safetensors") in line, line
    assert latent.is_dir()


# ----------------------------------------------------------------------------------------------
# random kills while readers read


def test_random_kills_lose_nothing_and_a_rerun_equals_an_uninterrupted_run(library_copy, tmp_path: Path) -> None:
    folder, store = library_copy
    start = tmp_path / "start"
    shutil.copytree(store, start)
    rng = np.random.default_rng(int(uuid.uuid4().int % (1 << 32)))
    tally = Tally()
    with Readers(store, tally, threads=2):
        for batch in range(3):
            add_files(folder, batch=batch, good=int(rng.integers(20, 60)), rng=rng)
            writers = 2 if batch == 1 else 1  # two at once: one is refused by the write lock
            killed_runs(folder, store, delays=rng.uniform(0.5, 4.0, writers).tolist(), tally=tally)
    finish_and_compare(folder, store, start, tally, scratch=tmp_path)
    assert tally.failures == [], (tally.summary(), tally.failures)
    assert tally.items_lost == 0 and tally.trials == 3 and tally.reads > 0 and tally.comparisons == 1, tally.summary()
