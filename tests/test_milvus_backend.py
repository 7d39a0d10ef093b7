"""The Milvus store backend on a real Milvus Lite file (tests/test_backend_contract.py runs the shared
contract over it too). Here: exactness against brute force where Milvus would cut ties (many equal
distances, and with MAX_TOPK made tiny so the id-window reads run), writes through generations, a
change of code length, the catalogue and its files, and crash safety: a writer killed with SIGKILL
at several points, then re-run, ends with the same contents as an uninterrupted run.

This file is also the writer the kill test runs in a subprocess: `python tests/test_milvus_backend.py
drive STORE RUN KILL_AT`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus: pip install 'hashae[milvus]' (make test does)")
pytest.importorskip("milvus_lite", reason="Milvus Lite is missing: pip install 'hashae[milvus]' (make test does)")

from hashae.codes import hamming_distances, pack_bits  # noqa: E402
from hashae.index.backends.base import (  # noqa: E402
    NewItem,
    SearchArgumentError,
    StoreError,
    UnknownItemError,
)
from hashae.index.backends.milvus import LITE_FILE, MilvusStore, exact  # noqa: E402
from hashae.index.backends.milvus import collection as milvus_collection  # noqa: E402
from hashae.index.backends.milvus.names import text_from_db, text_to_db  # noqa: E402
from hashae.index.settings import StoreSettings  # noqa: E402

DIM = 5
SETTINGS = StoreSettings(bits=32, latent_dim=DIM, backend="milvus")


# ------------------------------------------------------------------------------------ helpers
def items(names: list[str], *, salt: str = "") -> list[NewItem]:
    return [
        NewItem(name, 100 + i, 1_700_000_000_000_000_000 + i, hashlib.blake2b(f"{name}{salt}".encode()).hexdigest(),
                None if i % 4 == 0 else f"class{i % 3}")
        for i, name in enumerate(names)
    ]


def models_of(writer, store):
    return store.latest_models() or writer.add_models(
        hashing={"dir": "models/hashing-1", "kind": "hashing"}, latent={"dir": "models/latent-1", "kind": "vae"}
    )


def fill(store: MilvusStore, codes: np.ndarray, latents: np.ndarray, names: list[str], *, settings=SETTINGS) -> np.ndarray:
    with store.writer() as writer:
        writer.set_settings(settings)
        ids = writer.add_items(items(names), codes, latents)
        writer.commit(models=models_of(writer, store))
    return ids


def heavily_tied_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Three codes repeated hundreds of times, plus codes 1-3 bits off them: huge tie groups."""
    centres = rng.random((3, bits)) < 0.5
    codes = centres[rng.integers(0, 3, n)]
    flips = rng.random((n, bits)) < np.where(rng.random(n) < 0.6, 0.0, 0.05)[:, None]
    return pack_bits(codes ^ flips)


def tied_latents(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, (n, DIM)).astype(np.float32)  # 32 distinct vectors: every distance tied


def brute_force(distances: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    order = np.lexsort((ids, distances))
    return [(int(ids[i]), distances[i].item()) for i in order]


def pairs(hits) -> list[tuple[int, float]]:
    return [(hit.id, hit.distance) for hit in hits]


@pytest.fixture
def store(tmp_path):
    opened = MilvusStore.open(tmp_path / "store", create=True)
    yield opened
    opened.close()


@pytest.fixture(params=["milvus-limits", "tiny-limits"])
def tied_store(request, tmp_path, monkeypatch):
    """(view, ids, codes, latents): 1,500 items with huge tie groups. tiny-limits: one Milvus call
    returns at most 24 hits and rows are read 97 ids at a time, so every fallback path runs."""
    if request.param == "tiny-limits":
        monkeypatch.setattr(exact, "MAX_TOPK", 24)
        monkeypatch.setattr(milvus_collection, "ID_WINDOW", 97)
    rng = np.random.default_rng(3)
    codes, latents = heavily_tied_codes(rng, 1500, 32), tied_latents(rng, 1500)
    opened = MilvusStore.open(tmp_path / "store", create=True)
    ids = fill(opened, codes, latents, [f"img{i:05d}.png" for i in range(1500)])
    yield opened.snapshot(), ids, codes, latents
    opened.close()


# -------------------------------------------------------------------------- exact with many ties
def test_hamming_knn_equals_brute_force_through_huge_tie_groups(tied_store):
    view, ids, codes, _ = tied_store
    rng = np.random.default_rng(4)
    queries = np.concatenate([codes[:6], heavily_tied_codes(rng, 6, 32)])
    truth = hamming_distances(queries, codes)
    for k in (1, 5, 24, 300, 1600):
        if k > exact.MAX_TOPK and len(ids) > exact.MAX_TOPK:
            with pytest.raises(SearchArgumentError):
                view.search_hamming(queries, k=k)
            continue
        for hits, distances in zip(view.search_hamming(queries, k=k), truth):
            assert pairs(hits) == brute_force(distances, ids)[:k]
            assert all(type(hit.distance) is int for hit in hits)


def test_hamming_range_equals_brute_force_when_results_pass_the_limit(tied_store):
    view, ids, codes, _ = tied_store
    queries = codes[[0, 1, 700]]
    truth = hamming_distances(queries, codes)
    for radius in (0, 2, 5, 32):
        for hits, distances in zip(view.range_hamming(queries, radius=radius), truth):
            assert pairs(hits) == [(i, d) for i, d in brute_force(distances, ids) if d <= radius]


def test_latent_knn_equals_brute_force_with_every_distance_tied(tied_store):
    view, ids, _, latents = tied_store
    queries = np.concatenate([latents[:4], np.full((2, DIM), 0.5, dtype=np.float32)])
    truth = ((queries[:, None, :].astype(np.float64) - latents[None]) ** 2).sum(-1)
    for k in (1, 7, 24, 200):
        if k > exact.MAX_TOPK:
            continue
        for hits, distances in zip(view.search_latent(queries, k=k), truth):
            assert pairs(hits) == brute_force(distances, ids)[:k]  # small integers: exact float32 sums
            assert all(type(hit.distance) is float for hit in hits)


def test_item_ids_and_vectors_read_through_id_windows(tied_store):
    view, ids, codes, latents = tied_store
    np.testing.assert_array_equal(view.item_ids(), np.sort(ids))
    picked = np.random.default_rng(5).permutation(len(ids))[:300]
    np.testing.assert_array_equal(view.codes_of(ids[picked]), codes[picked])
    np.testing.assert_array_equal(view.latents_of(ids[picked]), latents[picked])
    with pytest.raises(UnknownItemError):
        view.codes_of(np.array([ids.max() + 1]))


def test_more_items_than_one_milvus_call_returns(store):
    n = exact.MAX_TOPK + 700  # Milvus returns at most 16,384 rows or hits per call
    rng = np.random.default_rng(12)
    codes, latents = rng.integers(0, 256, (n, 4), dtype=np.uint8), tied_latents(rng, n)
    ids = fill(store, codes, latents, [f"p{i:05d}" for i in range(n)])
    view = store.snapshot()
    np.testing.assert_array_equal(view.item_ids(), ids)
    with store.writer() as writer:
        assert len(writer.live_items()) == n
    everything = view.range_hamming(codes[:1], radius=32)[0]
    assert pairs(everything) == brute_force(hamming_distances(codes[:1], codes)[0], ids)


# ------------------------------------------------------------------------------ writes, generations
def test_generations_hide_pending_rows_and_keep_removed_ones_for_older_views(store):
    rng = np.random.default_rng(6)
    codes, latents = heavily_tied_codes(rng, 50, 32), tied_latents(rng, 50)
    ids = fill(store, codes, latents, [f"a{i:02d}" for i in range(50)])
    first = store.snapshot()
    with store.writer() as writer:
        writer.remove_items(ids[:10])
        new_ids = writer.add_items(items(["b0", "b1"]), codes[:2], latents[:2])
        pending = store.snapshot()
        assert pending.gen == 1 and pending.n_items == 50
        assert set(pending.item_ids().tolist()) == set(ids.tolist())  # adds invisible, removals not yet
        assert pending.items(new_ids.tolist()) == {}
        assert store.info()["pending"] == {"added": 2, "removed": 10}
        with pytest.raises(StoreError, match="already in the store"):
            writer.add_items(items(["b0"]), codes[:1], latents[:1])
        with pytest.raises(StoreError, match="not live"):
            writer.remove_items([ids[0]])
        writer.commit(models=store.latest_models())
    second = store.snapshot()
    assert second.n_items == 42 and first.is_stale() and not second.is_stale()
    assert set(second.item_ids().tolist()) == set(ids[10:].tolist()) | set(new_ids.tolist())
    # the older view still shows generation 1, removed rows included, until the commit of 3 purges them
    assert {hit.id for hit in first.range_hamming(codes[:1], radius=32)[0]} == set(ids.tolist())
    assert first.items(ids[:1].tolist())[int(ids[0])].removed_gen == 2
    with store.writer() as writer:
        writer.commit(models=store.latest_models())
    assert store.snapshot().n_items == 42
    # purged by the commit of 3: a view two generations behind no longer finds the rows it removed
    assert {hit.id for hit in first.range_hamming(codes[:1], radius=32)[0]} == set(ids[10:].tolist())


def test_a_new_code_length_moves_the_items_to_a_new_collection(store):
    rng = np.random.default_rng(7)
    ids = fill(store, heavily_tied_codes(rng, 30, 32), tied_latents(rng, 30), [f"a{i}" for i in range(30)])
    old_view = store.snapshot()
    wider = SETTINGS.with_changes(bits=64)
    with store.writer() as writer:
        writer.set_settings(wider)
        fresh = writer.add_items(items(["x", "y"]), heavily_tied_codes(rng, 2, 64), tied_latents(rng, 2))
        with pytest.raises(StoreError, match="still live"):
            writer.commit(models=store.latest_models())
        assert sorted(writer.live_items()) == sorted([f"a{i}" for i in range(30)] + ["x", "y"])
        writer.remove_items(ids)
        writer.commit(models=store.latest_models())
    view = store.snapshot()
    assert view.settings.bits == 64 and view.n_items == 2
    assert view.codes_of(fresh).shape == (2, 8)
    assert old_view.n_items == 30 and old_view.codes_of(ids[:3]).shape == (3, 4)  # its own collection
    old_collection = old_view.collection
    for _ in range(2):
        with store.writer() as writer:
            writer.commit(models=store.latest_models())
    assert not old_collection.exists()  # dropped once no generation within reach uses it
    assert len(store.catalogue.collections()) == 1


def test_settings_must_name_this_store_and_the_index_must_fit_lite(store, tmp_path):
    with store.writer() as writer:
        with pytest.raises(StoreError, match="backend='milvus'"):
            writer.set_settings(StoreSettings(bits=32, latent_dim=DIM))
        with pytest.raises(StoreError, match="backend='milvus'"):
            writer.set_settings(SETTINGS.with_changes(backend_uri="http://elsewhere:19530"))
    with pytest.raises(StoreError, match="BIN_FLAT"):
        MilvusStore.open(tmp_path / "ivf", create=True, uri=str(tmp_path / "vectors.db"), hamming_index="BIN_IVF_FLAT")


def test_a_store_on_a_lite_file_elsewhere_remembers_its_uri(tmp_path, monkeypatch):
    lite = tmp_path / "shared" / "vectors.db"
    lite.parent.mkdir()
    settings = SETTINGS.with_changes(backend_uri=str(lite))
    with MilvusStore.open(tmp_path / "store", create=True, uri=str(lite)) as store:
        fill(store, heavily_tied_codes(np.random.default_rng(8), 10, 32), tied_latents(np.random.default_rng(8), 10),
             [f"a{i}" for i in range(10)], settings=settings)
    assert lite.is_file() and not (tmp_path / "store" / LITE_FILE).exists()
    with MilvusStore.open(tmp_path / "store") as reopened:
        assert reopened.snapshot().n_items == 10 and reopened.settings() == settings
        assert reopened.info()["backend"]["uri"] == str(lite)
    with pytest.raises(StoreError, match="keeps its items at"):
        MilvusStore.open(tmp_path / "store", uri=str(tmp_path / "other.db"))
    with MilvusStore.open(tmp_path / "store") as reopened, reopened.writer() as writer:
        monkeypatch.chdir(lite.parent)  # the same file spelt relative to the working folder
        writer.set_settings(settings.with_changes(backend_uri="vectors.db", image_size=32))
        assert reopened.settings() == settings.with_changes(image_size=32)  # kept as recorded


def test_names_that_are_not_utf8_and_labels_round_trip(store):
    odd = os.fsdecode(b"bad\xff name.png")
    rows = [NewItem(odd, 1, 2, "h1", os.fsdecode(b"cl\xe9")), NewItem("//b64:looks-encoded", 1, 2, "h2", None),
            NewItem("plain.png", 1, 2, "h3", "")]
    with store.writer() as writer:
        writer.set_settings(SETTINGS)
        ids = writer.add_items(rows, np.zeros((3, 4), np.uint8), np.zeros((3, DIM), np.float32))
        writer.record_skipped([(odd, "not an image", 1, 2)])
        writer.commit(models=models_of(writer, store))
        assert sorted(writer.live_items()) == sorted(row.path for row in rows)
    found = store.snapshot().items(ids.tolist())
    assert [(found[int(i)].path, found[int(i)].label) for i in ids] == [(r.path, r.label) for r in rows]
    assert [s.path for s in store.skipped()] == [odd]
    for text in (None, "", "x", odd, "//b64:", "//b64:Zm9v"):
        assert text_from_db(text_to_db(text)) == text


def test_opening_writes_nothing_and_a_blank_writer_takes_its_store_back(tmp_path):
    MilvusStore.open(tmp_path / "new", create=True).close()
    assert not (tmp_path / "new").exists()
    with MilvusStore.open(tmp_path / "new", create=True) as store:
        with store.writer() as writer:
            assert writer.live_items() == {} and writer.pending() == (0, 0)
        assert store.info()["empty"] is True
    assert not (tmp_path / "new").exists()
    with pytest.raises(StoreError, match="no hashae Milvus store"):
        MilvusStore.open(tmp_path / "new")


def test_one_writer_at_a_time_and_one_process_per_lite_file(store, tmp_path):
    fill(store, np.zeros((2, 4), np.uint8), np.zeros((2, DIM), np.float32), ["a", "b"])
    with store.writer():
        with pytest.raises(StoreError, match="another hashae writer"):
            with store.writer():
                pass
    store.snapshot().search_hamming(np.zeros((1, 4), np.uint8), k=1)  # this process runs the Lite server now
    probe = "from hashae.index.backends.milvus import MilvusStore; MilvusStore.open(%r).snapshot().n_items"
    result = subprocess.run([sys.executable, "-c", probe % str(store.root)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "open in another process" in result.stderr
    store.close()
    result = subprocess.run([sys.executable, "-c", probe % str(store.root)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr  # released on close


def test_reopening_right_after_the_owner_is_killed_never_runs_two_servers_on_one_file(store):
    from hashae.index.backends.milvus.connection import _servers_of

    fill(store, np.zeros((2, 4), np.uint8), np.zeros((2, DIM), np.float32), ["a", "b"])
    store.close()
    owner = ("import sys, time; from hashae.index.backends.milvus import MilvusStore; "
             "MilvusStore.open(sys.argv[1]).snapshot().search_hamming(__import__('numpy').zeros((1, 4), 'uint8'), k=1); "
             "print('serving', flush=True); time.sleep(120)")
    lite_file = (store.root / LITE_FILE).resolve()
    for _ in range(3):
        with subprocess.Popen([sys.executable, "-c", owner, str(store.root)], stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout.readline().strip() == "serving"
            process.kill()  # its server lingers a moment, then exits when it finds the lock free
        with MilvusStore.open(store.root) as reopened:
            assert reopened.snapshot().search_hamming(np.zeros((1, 4), np.uint8), k=2)[0]
            assert len(_servers_of(lite_file)) == 1  # ours only: the killed owner's server was let go first


def test_the_backend_imports_pymilvus_only_when_it_reaches_milvus():
    probe = ("import sys; import hashae.index.backends.milvus; "
             "assert not {'pymilvus', 'milvus_lite'} & set(sys.modules), 'imported at import time'")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------- crash safety
# Two runs over a "folder" described by data: FIRST indexes 180 files (one unreadable); SECOND
# deletes 20, changes 15, touches 10, adds 40 and fixes the unreadable one. The driver below does
# what the pipeline does, through the Protocol, and kills itself with SIGKILL at a named point.
BATCH = 30
N_FIRST = 180


def folder_state(run: str) -> tuple[dict[str, tuple], dict[str, str]]:
    """(files: path -> (size, mtime_ns, content_hash, label, code, latent), unreadable: path -> reason)."""
    rng = np.random.default_rng(11)
    codes = heavily_tied_codes(rng, N_FIRST + 60, 32)
    latents = rng.standard_normal((N_FIRST + 60, DIM)).astype(np.float32)
    files = {f"f{i:03d}.png": (100 + i, 1_000 + i, f"hash{i}", f"c{i % 3}", codes[i], latents[i]) for i in range(N_FIRST)}
    unreadable = {"broken.png": "not an image"}
    if run == "second":
        for i in range(20):
            del files[f"f{i:03d}.png"]
        for i in range(20, 35):  # changed content: new hash, code and latent
            files[f"f{i:03d}.png"] = (7, 2_000 + i, f"new{i}", "c9", codes[N_FIRST + i], latents[N_FIRST + i])
        for i in range(35, 45):  # touched: same content, new mtime
            size, _, content, label, code, latent = files[f"f{i:03d}.png"]
            files[f"f{i:03d}.png"] = (size, 3_000 + i, content, label, code, latent)
        for i in range(40):
            files[f"g{i:02d}.png"] = (9, 4_000 + i, f"g{i}", None, codes[-i - 1], latents[-i - 1])
        unreadable = {}
    return files, unreadable


def drive(store_path: str, run: str, kill_at: str) -> None:
    """One indexing run over folder_state(run), killed with SIGKILL at kill_at ("never": finish)."""

    def checkpoint(step: str) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    files, unreadable = folder_state(run)
    with MilvusStore.open(store_path, create=True) as store, store.writer() as writer:
        writer._at = checkpoint  # the commit's own points: flushed, generation_committed, purged
        writer.set_settings(SETTINGS)
        checkpoint("settings_set")
        models = models_of(writer, store)
        live = writer.live_items()
        gone = [item.id for path, item in live.items() if path not in files or files[path][2] != item.content_hash]
        touched = [(item.id, files[path][1]) for path, item in live.items()
                   if path in files and files[path][2] == item.content_hash and files[path][1] != item.mtime_ns]
        writer.remove_items(gone)
        checkpoint("removed")
        writer.update_mtimes(touched)
        to_add = sorted(path for path in files if path not in live or live[path].content_hash != files[path][2])
        for batch, start in enumerate(range(0, len(to_add), BATCH)):
            paths = to_add[start : start + BATCH]
            print(f"adding {batch}", flush=True)
            rows = [NewItem(p, files[p][0], files[p][1], files[p][2], files[p][3]) for p in paths]
            writer.add_items(rows, np.stack([files[p][4] for p in paths]), np.stack([files[p][5] for p in paths]))
            checkpoint(f"added:{batch}")
        writer.record_skipped([(path, reason, 1, 1) for path, reason in unreadable.items()])
        writer.clear_skipped([s.path for s in store.skipped() if s.path not in unreadable])
        writer.commit(models=models)


def run_driver(store: Path, run: str, kill_at: str = "never", *, race_after: str | None = None) -> int:
    """Run drive() in a subprocess; race_after: SIGKILL it from here as soon as it prints that line."""
    command = [sys.executable, __file__, "drive", str(store), run, kill_at]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        for line in process.stdout:
            if race_after is not None and line.strip() == race_after:
                process.kill()  # somewhere inside the next Milvus insert, or just before or after it
                break
        process.wait(timeout=300)
        errors = process.stderr.read()
    assert process.returncode in (0, -signal.SIGKILL), errors
    return process.returncode


def contents(store_path: Path, *, finished: bool = True) -> dict:
    """Everything a store shows, ids left out: per path its metadata and vectors; skipped; counts.
    finished: the last run completed, so nothing may be left pending."""
    with MilvusStore.open(store_path) as store:
        view = store.snapshot()
        ids = view.item_ids()
        infos = view.items(ids.tolist())
        codes, latents = view.codes_of(ids), view.latents_of(ids)
        working = store.collection_named(view.generation.collection)
        if finished:
            with store.writer() as writer:
                assert writer.pending() == (0, 0), "rows left pending after a completed run"
        return {
            "items": {infos[int(i)].path: (infos[int(i)].size, infos[int(i)].mtime_ns, infos[int(i)].content_hash,
                                           infos[int(i)].label, code.tobytes(), latent.tobytes())
                      for i, code, latent in zip(ids, codes, latents)},
            "n_items": view.n_items,
            "live_rows": working.count(milvus_collection.LIVE),  # no stray live rows outside the generation
            "skipped": [(s.path, s.reason) for s in store.skipped()],
            "settings": view.settings,
            "models": store.latest_models().hashing.id,
        }


@pytest.fixture(scope="module")
def crash_runs(tmp_path_factory):
    """(after_first, after_second): stores of uninterrupted runs (after_first is the template the
    kills of the second run start from), and their expected contents."""
    root = tmp_path_factory.mktemp("milvus-crash")
    first, second = root / "first", root / "second"
    run_driver(first, "first")
    shutil.copytree(first, second)
    run_driver(second, "second")
    expected = {"first": contents(first), "second": contents(second)}
    assert len(expected["second"]["items"]) == N_FIRST - 20 + 40 and expected["second"]["skipped"] == []
    return first, expected


@pytest.mark.parametrize(
    "run, kill_at, race_after",
    [
        ("first", "settings_set", None),
        ("first", "added:2", None),
        ("first", "never", "adding 3"),  # killed from outside while it inserts
        ("first", "flushed", None),  # everything written, not yet committed
        ("second", "removed", None),
        ("second", "added:0", None),
        ("second", "generation_committed", None),  # committed, not yet purged
    ],
)
def test_a_writer_killed_anywhere_and_run_again_ends_as_an_uninterrupted_run(crash_runs, tmp_path, run, kill_at, race_after):
    template, expected = crash_runs
    store = tmp_path / "store"
    if run == "second":
        shutil.copytree(template, store)
    code = run_driver(store, run, kill_at, race_after=race_after)
    # a race may come too late on a busy machine: the run then finished, and the re-run must change nothing
    assert code == -signal.SIGKILL or race_after is not None
    if code == -signal.SIGKILL and kill_at != "generation_committed":
        # the last committed generation is intact: nothing of the killed run is visible
        previous = expected["first"] if run == "second" else None
        if previous is None:
            with MilvusStore.open(store) as killed:
                assert killed.info()["empty"]
        else:
            # (mtimes of touched files are recorded in place at once, as in the local store)
            without_mtimes = [{path: row[:1] + row[2:] for path, row in state["items"].items()}
                              for state in (contents(store, finished=False), previous)]
            assert without_mtimes[0] == without_mtimes[1]
    assert run_driver(store, run) == 0
    assert contents(store) == expected[run]


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "drive":
    drive(*sys.argv[2:])
