"""Crash safety of `hashae index`: a real CLI process is SIGKILLed at injected points of the run or
when the store is seen changing, then the index is run again. The store must open, keep what was
committed, and end exactly as an uninterrupted run would. A second writer gets a one-line error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import draw_images, image_paths, index_quietly, store_state
from typer.testing import CliRunner

from hashae.cli.main import app

REPO = Path(__file__).resolve().parents[1]
BATCH = 16  # encode batch size in the crash runs, so a run writes several catalogue transactions

# `python -c CRASH_RUNNER STEP hashae-arguments...`: the real CLI, with a SIGKILL injected at STEP:
#   ""            no kill (an uninterrupted run)
#   "batch:N"     when the Nth catalogue batch of the encode stage is written (N = 0: just before the first)
#   "pause"       hold the writer's lock: print READY, sleep (for the concurrent-writer test)
#   other         at the write transaction's commit step of that name (see LocalWriteTransaction._at)
CRASH_RUNNER = f"""
import os, signal, sys, time
step, args = sys.argv[1], sys.argv[2:]
import hashae.index.pipeline as pipeline
from hashae.index.backends.local.writer import LocalWriteTransaction
pipeline.ENCODE_BATCH = {BATCH}
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if step.startswith("batch:"):
    target, written, add_items = int(step.split(":")[1]), [0], LocalWriteTransaction.add_items
    def counting_add_items(self, *a, **k):
        if target == 0:
            die()
        out = add_items(self, *a, **k)
        written[0] += 1
        if written[0] == target:
            die()
        return out
    LocalWriteTransaction.add_items = counting_add_items
elif step == "pause":
    plan = pipeline.plan_changes
    def paused_plan(*a, **k):
        print("READY", flush=True)
        time.sleep(60)
        return plan(*a, **k)
    pipeline.plan_changes = paused_plan
elif step:
    LocalWriteTransaction._at = lambda self, name: die() if name == step else None
from hashae.cli.main import app
app(args, prog_name="hashae")
"""


def index_command(step: str, folder: Path, store: Path, *extra: str) -> list[str]:
    args = ["index", str(folder), "--store", str(store), "--epochs", "1", "--device", "cpu", "-q", *extra]
    return [sys.executable, "-c", CRASH_RUNNER, step, *args]


def run_until_killed(step: str, folder: Path, store: Path) -> None:
    result = subprocess.run(index_command(step, folder, store), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr


def kill_when(condition, command: list[str], *, timeout: float = 240) -> bool:
    """Start command; SIGKILL it as soon as condition() holds. False when it finished first."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if condition():
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return True
                time.sleep(0.005)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr.seek(0)
        assert process.returncode == 0, stderr.read().decode(errors="replace")
        return False


def info_of(store: Path) -> dict:
    result = CliRunner().invoke(app, ["info", "--store", str(store), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def skipped_of(store: Path) -> dict[str, str]:
    return {entry["path"]: entry["reason"] for entry in info_of(store)["skipped"]}


# --------------------------------------------------------------------- an incremental run killed
@pytest.fixture(scope="module")
def second_version(indexed_library, tmp_path_factory):
    """The session's folder changed (40 added, 5 modified, 5 deleted, 1 broken file added), and the
    store after an uninterrupted index of it: (v1 state, v2 folder, v2 state, v2 skipped)."""
    folder, store = indexed_library
    base = tmp_path_factory.mktemp("second_version")
    v2, reference = base / "images", base / "store"
    shutil.copytree(folder, v2)
    shutil.copytree(store, reference)
    v1_state = store_state(store)
    paths = sorted(v1_state)
    for path in paths[:5]:
        (v2 / path).unlink()
    for i, path in enumerate(paths[30:35]):
        draw_images(v2 / "tmp", 1, seed=200 + i, classes=False)
        os.replace(v2 / "tmp" / "img_0000.png", v2 / path)
    (v2 / "tmp").rmdir()
    draw_images(v2, 40, seed=3, prefix="added")
    (v2 / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    index_quietly(reference, v2)
    return v1_state, v2, store_state(reference), skipped_of(reference)


@pytest.fixture
def crash_copy(indexed_library, second_version, tmp_path):
    """A fresh copy of the v1 store and of the v2 folder."""
    shutil.copytree(indexed_library[1], tmp_path / "store")
    shutil.copytree(second_version[1], tmp_path / "images")
    return tmp_path / "images", tmp_path / "store"


def check_recovery(folder: Path, store: Path, second_version, *, committed: bool | None) -> None:
    """After a kill: the store opens with v1 or (committed) v2 intact; a re-run ends exactly as the
    uninterrupted one did, unchanged items keeping their ids and codes."""
    v1_state, _, v2_state, v2_skipped = second_version
    state = store_state(store)
    if committed is None:
        assert state in (v1_state, v2_state)
    else:
        assert state == (v2_state if committed else v1_state)
    assert info_of(store)["items"] == len(state)
    summary = index_quietly(store, folder)
    assert not summary.trained
    assert store_state(store) == v2_state  # paths, ids, codes and labels
    assert skipped_of(store) == v2_skipped
    assert set(v2_state) == image_paths(folder) - set(v2_skipped)


KILL_STEPS = {
    "batch:0": False,  # old rows of modified/deleted files already marked removed
    "batch:1": False,
    "batch:2": False,
    "indexes_built": False,
    "temp_files_written": False,
    "files_renamed": False,
    "generation_committed": True,
    "purged": True,
}


@pytest.mark.parametrize("step", list(KILL_STEPS))
def test_sigkill_at_injected_points(crash_copy, second_version, step):
    folder, store = crash_copy
    run_until_killed(step, folder, store)
    check_recovery(folder, store, second_version, committed=KILL_STEPS[step])


def test_sigkill_when_new_rows_appear_in_the_catalogue(crash_copy, second_version):
    folder, store = crash_copy
    catalogue = store / "catalogue.db"
    db = sqlite3.connect(catalogue, timeout=0.05)
    (rows_before,) = db.execute("SELECT max(id) FROM items").fetchone()

    def rows_appeared() -> bool:
        try:
            return db.execute("SELECT max(id) FROM items").fetchone()[0] != rows_before
        except sqlite3.OperationalError:  # busy
            return False

    try:
        kill_when(rows_appeared, index_command("", folder, store))
    finally:
        db.close()
    check_recovery(folder, store, second_version, committed=None)


def test_uninterrupted_cli_run_matches_the_reference(crash_copy, second_version):
    folder, store = crash_copy
    result = subprocess.run(index_command("", folder, store), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert store_state(store) == second_version[2]


# ----------------------------------------------------------------------- a first run killed
def test_first_run_killed_once_checkpoints_appear(indexed_library, tmp_path):
    """Killed between training and the first commit: no generation yet; the re-run finishes it."""
    folder = indexed_library[0]
    store = tmp_path / "store"
    models = store / "models"

    def checkpoint_written() -> bool:
        return models.is_dir() and any(not p.name.startswith(".") for p in models.iterdir())

    assert kill_when(checkpoint_written, index_command("", folder, store)), "the run finished before the kill"
    assert info_of(store)["generation"] in (0, 1)  # 0 unless the process was descheduled for long
    index_quietly(store, folder)
    assert set(store_state(store)) == set(store_state(indexed_library[1])) == image_paths(folder)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.0, 3.0, 6.0, 9.0])
def test_first_run_killed_after_a_delay(indexed_library, tmp_path, delay):
    folder, store = indexed_library[0], tmp_path / "store"
    started = time.monotonic()
    kill_when(lambda: time.monotonic() - started > delay, index_command("", folder, store))
    if (store / "catalogue.db").is_file():
        info_of(store)
    index_quietly(store, folder)
    assert set(store_state(store)) == image_paths(folder)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["batch:1", "generation_committed"])
def test_retrain_killed_then_finished_without_retrain(crash_copy, second_version, step):
    """A --retrain killed after its models were recorded: the next plain run encodes every item
    with the new models, none with the old ones."""
    folder, store = crash_copy
    command = index_command(step, folder, store, "--retrain")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    index_quietly(store, folder)
    state = store_state(store)
    assert set(state) == set(second_version[2])
    assert not set(row[0] for row in state.values()) & set(row[0] for row in second_version[0].values())


# ----------------------------------------------------------------------------- two writers
def test_second_writer_gets_a_one_line_error(library_copy):
    folder, store = library_copy
    holder = subprocess.Popen(index_command("pause", folder, store), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "READY"
        result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), "-q"], catch_exceptions=False)
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "another hashae writer" in lines[0] and f"pid {holder.pid}" in lines[0], result.stderr
        assert "Traceback" not in result.output
        # readers take no lock: queries and info still answer while the writer works
        query = CliRunner().invoke(app, ["query", "--id", "1", "--store", str(store), "--json"], catch_exceptions=False)
        assert query.exit_code == 0, query.output
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    index_quietly(store, folder)  # the lock dies with its holder
