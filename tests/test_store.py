"""The catalogue and the store: visibility by generation, searches against brute force, the write lock,
readers isolated from writers, rebuilding damaged index files, and crash safety under SIGKILL."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hashae.codes import hamming_distances
from hashae.errors import ConfigError
from hashae.index.backends.base import ModelPair, NewItem, SearchArgumentError, StoreError, UnknownItemError
from hashae.index.backends.local.catalogue import Catalogue
from hashae.index.backends.local.store import LocalStore
from hashae.index.settings import StoreSettings

REPO = Path(__file__).resolve().parents[1]
BITS, DIM = 32, 8

# A writer run, as a script: executed in-process for reference runs and in a subprocess (python -c)
# for crash runs, where CRASH names the step at which the process SIGKILLs itself.
DRIVER = r'''
import hashlib, os, signal, sys
import numpy as np
from hashae.index.backends.base import NewItem
from hashae.index.backends.local.catalogue import Catalogue
from hashae.index.backends.local.store import LocalStore
from hashae.index.backends.local.writer import LocalWriteTransaction
from hashae.index.settings import StoreSettings


def wanted_files(version):
    """path -> content. Version 2 drops p000-p029, modifies p030-p049 and adds p240-p299."""
    if version == 1:
        return {f"p{i:03d}": f"v1-{i}" for i in range(240)}
    return {f"p{i:03d}": f"v2-{i}" if i < 50 else f"v1-{i}" for i in range(30, 300)}


def encode(content):
    """Deterministic code (BITS bits) and latent (DIM floats) of a file's content."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(content.encode()).digest()[:8], "little"))
    return rng.integers(0, 256, BITS // 8, dtype=np.uint8), rng.standard_normal(DIM).astype(np.float32)


def new_item(path, content):
    number = int(path[1:])
    digest = hashlib.blake2b(content.encode()).hexdigest()
    return NewItem(path, len(content), 1_700_000_000_000_000_000 + number, digest, f"class{number % 3}")


def crash_at(step):
    if step == "inside_batch_transaction":  # killed mid-transaction, in the second batch
        original = Catalogue._item_records
        made = []
        def records(self, *args):
            for record in original(self, *args):  # executemany takes them one by one, rows already in
                made.append(1)
                if len(made) == BATCH + 10:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield record
        Catalogue._item_records = records
    def at(self, name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    LocalWriteTransaction._at = at


def model_pair(store, writer):
    return store.latest_models() or writer.add_models(
        hashing=dict(dir="models/hashing-1", kind="hashing"), latent=dict(dir="models/latent-1", kind="latent")
    )


def run(store_path, version, crash=None):
    if crash:
        crash_at(crash)
    store = LocalStore.open(store_path, create=True, hnsw_threshold=HNSW_THRESHOLD)
    with store.writer() as writer:
        print("writing", flush=True)
        writer.set_settings(StoreSettings(bits=BITS, latent_dim=DIM, image_size=28))
        models = model_pair(store, writer)
        wanted = wanted_files(version)
        live = writer.live_items()
        changed = {
            p for p, item in live.items()
            if p not in wanted or item.content_hash != new_item(p, wanted[p]).content_hash
        }
        writer.remove_items(live[p].id for p in sorted(changed))
        todo = [p for p in sorted(wanted) if p not in live or p in changed]
        for start in range(0, len(todo), BATCH):
            paths = todo[start:start + BATCH]
            codes, latents = zip(*(encode(wanted[p]) for p in paths))
            writer.add_items([new_item(p, wanted[p]) for p in paths], np.stack(codes), np.stack(latents))
            writer._at("batch_added")
        if writer.pending() != (0, 0) or store.catalogue.last_generation() == 0:
            writer.commit(models=models)
    store.close()
'''

DRIVER_SETTINGS = f"BITS, DIM, BATCH, HNSW_THRESHOLD = {BITS}, {DIM}, 25, 200_000\n"
driver = {}
exec(DRIVER_SETTINGS + DRIVER, driver)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


# ------------------------------------------------------------------------------------------ helpers
def run_driver_in_subprocess(store_path, version, crash):
    code = DRIVER_SETTINGS + DRIVER + f"\nrun({str(store_path)!r}, {version}, {crash!r})\n"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def visible_contents(store, gen):
    """path -> content hash of the rows visible in gen, read from SQLite."""
    ids, _, _ = store.catalogue.items_visible(gen)
    return {item.path: item.content_hash for item in store.catalogue.items(ids).values()}


def expected_contents(version):
    return {p: driver["new_item"](p, c).content_hash for p, c in driver["wanted_files"](version).items()}


def brute_force_hits(query_dist, ids, k):
    """(id, distance) of the k best, sorted by (distance, id)."""
    order = np.lexsort((ids, query_dist))[:k]
    return [(int(ids[i]), query_dist[i]) for i in order]


def assert_snapshot_matches_brute_force(snapshot, *, k=10, radius=12):
    """Every search of the snapshot equals brute force over the rows SQLite says are visible."""
    ids, codes, latents = snapshot.store.catalogue.items_visible(snapshot.gen)
    assert snapshot.n_items == len(ids)
    rng = np.random.default_rng(snapshot.gen)
    query_rows = rng.choice(len(ids), 8, replace=False)
    q_codes = np.concatenate([codes[query_rows], rng.integers(0, 256, (4, BITS // 8), dtype=np.uint8)])
    q_latents = np.concatenate([latents[query_rows], rng.standard_normal((4, DIM)).astype(np.float32)])
    hamming = hamming_distances(q_codes, codes)
    latent = ((q_latents[:, None, :] - latents[None, :, :]) ** 2).sum(-1)

    def as_pairs(results):
        return [[(hit.id, hit.distance) for hit in hits] for hits in results]

    assert as_pairs(snapshot.search_hamming(q_codes, k=k)) == [brute_force_hits(d, ids, k) for d in hamming]
    in_ball = [[(int(ids[i]), int(d[i])) for i in np.lexsort((ids, d)) if d[i] <= radius] for d in hamming]
    assert as_pairs(snapshot.range_hamming(q_codes, radius=radius)) == in_ball
    for got, d in zip(as_pairs(snapshot.search_latent(q_latents, k=k)), latent):
        want = brute_force_hits(d, ids, k)
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([d for _, d in got], [d for _, d in want], rtol=1e-5)
    np.testing.assert_array_equal(snapshot.item_ids(), ids)
    shuffled = rng.permutation(ids)
    np.testing.assert_array_equal(snapshot.codes_of(shuffled), codes[np.searchsorted(ids, shuffled)])
    np.testing.assert_array_equal(snapshot.latents_of(shuffled), latents[np.searchsorted(ids, shuffled)])


def store_state(store_path):
    """Everything a re-run must reproduce: rows (ids included), generations, models, files, answers."""
    with LocalStore.open(store_path) as store:
        db = store.catalogue.connection
        rows = db.execute(
            "SELECT id, path, size, mtime_ns, content_hash, label, code, latent, added_gen, removed_gen"
            " FROM items ORDER BY id"
        ).fetchall()
        generations = db.execute(
            "SELECT gen, n_items, hashing_model, latent_model, hamming_file, latent_file, settings_json"
            " FROM generations ORDER BY gen"
        ).fetchall()
        models = db.execute("SELECT id, role, dir, kind FROM models ORDER BY id").fetchall()
        snapshot = store.snapshot()
        ids, codes, latents = store.catalogue.items_visible(snapshot.gen)
        answers = (
            snapshot.search_hamming(codes[:20], k=10),
            snapshot.search_latent(latents[:20], k=10),
            snapshot.range_hamming(codes[:20], radius=4),
        )
        files = sorted(p.name for p in store.indexes_dir.iterdir())
        return rows, generations, models, files, answers, snapshot.rebuilt_because


@pytest.fixture(scope="module")
def reference_stores(tmp_path_factory):
    """Uninterrupted runs: a store after version 1, and one after version 1 then version 2."""
    base = tmp_path_factory.mktemp("reference")
    driver["run"](base / "v1", 1)
    shutil.copytree(base / "v1", base / "v2")
    driver["run"](base / "v2", 2)
    return base / "v1", base / "v2"


@pytest.fixture
def store_v1(reference_stores, tmp_path):
    """A private copy of the store after version 1 (generation 1)."""
    shutil.copytree(reference_stores[0], tmp_path / "store")
    return tmp_path / "store"


def items_for(paths, rng):
    rows = [NewItem(p, 10, 1, hashlib.blake2b(p.encode()).hexdigest(), None) for p in paths]
    codes = rng.integers(0, 256, (len(paths), BITS // 8), dtype=np.uint8)
    latents = rng.standard_normal((len(paths), DIM)).astype(np.float32)
    return rows, codes, latents


# ---------------------------------------------------------------------------------------- catalogue
def test_catalogue_visibility_by_generation(tmp_path):
    rng = np.random.default_rng(0)
    with Catalogue.create(tmp_path / "catalogue.db") as catalogue:
        assert catalogue.db.journal_mode == "wal"
        assert catalogue.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        rows, codes, latents = items_for([f"a{i}" for i in range(6)], rng)
        ids = catalogue.add_items(rows, codes, latents, gen=1)
        assert ids.dtype == np.int64 and list(ids) == [1, 2, 3, 4, 5, 6]
        assert catalogue.count_visible(0) == 0 and catalogue.count_visible(1) == 6

        got_ids, got_codes, got_latents = catalogue.items_visible(1)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_codes, codes)
        np.testing.assert_array_equal(got_latents, latents)
        assert got_codes.dtype == np.uint8 and got_latents.dtype == np.float32

        # generation 2: a5 deleted, a0 modified (old row removed + new row added), b0 new
        catalogue.remove_items([ids[5], ids[0]], gen=2)
        new_rows, new_codes, new_latents = items_for(["a0", "b0"], rng)
        new_ids = catalogue.add_items(new_rows, new_codes, new_latents, gen=2)
        assert list(catalogue.items_visible(1)[0]) == list(ids)  # generation 1 unchanged
        assert list(catalogue.items_visible(2)[0]) == [2, 3, 4, 5, 7, 8]
        assert list(catalogue.items_added_in(2)[0]) == list(new_ids)
        assert list(catalogue.ids_removed_in(2)) == [1, 6]
        assert catalogue.count_pending(2) == (2, 2)
        live = catalogue.live_items()
        assert sorted(live) == ["a0", "a1", "a2", "a3", "a4", "b0"] and live["a0"].id == 7
        assert catalogue.item(1).removed_gen == 2 and catalogue.item(99) is None

        # a row added and dropped within the same pending generation is never visible
        lost = catalogue.add_items(*items_for(["c0"], rng), gen=2)
        catalogue.remove_items(lost, gen=2)
        assert catalogue.items_visible(2)[0].tolist() == [2, 3, 4, 5, 7, 8]
        assert catalogue.purge_removed(through_gen=1) == 1  # only the never-visible row
        assert catalogue.purge_removed(through_gen=2) == 2  # rows generation 2 no longer shows
        assert catalogue.items_visible(2)[0].tolist() == [2, 3, 4, 5, 7, 8]


def test_catalogue_add_items_returns_each_rows_id_in_order(tmp_path):
    """One executemany per batch: the ids handed back still name the rows given, in their order,
    after purged rows (AUTOINCREMENT never reuses an id) and across batches."""
    rng = np.random.default_rng(7)
    with Catalogue.create(tmp_path / "catalogue.db") as catalogue:
        first = catalogue.add_items(*items_for([f"a{i}" for i in range(5)], rng), gen=1)
        catalogue.remove_items(first[3:], gen=1)
        assert catalogue.purge_removed(through_gen=1) == 2  # the largest ids are gone
        rows, codes, latents = items_for(["b0", "b1", "b2"], rng)
        ids = catalogue.add_items(rows, codes, latents, gen=2)
        assert ids.dtype == np.int64 and ids.tolist() == [6, 7, 8]
        assert [catalogue.item(i).path for i in ids] == ["b0", "b1", "b2"]
        got_ids, got_codes, got_latents = catalogue.items_added_in(2)
        assert got_ids.tolist() == ids.tolist()
        assert np.array_equal(got_codes, codes) and np.array_equal(got_latents, latents)
        assert catalogue.add_items(*items_for([], rng), gen=2).tolist() == []
        with pytest.raises(StoreError, match="'c1' is already in the catalogue"):  # twice in one batch
            catalogue.add_items(*items_for(["c0", "c1", "c1"], rng), gen=2)
        assert "c0" not in catalogue.live_items()  # the refused batch left nothing behind


def test_catalogue_refuses_a_second_live_row_for_a_path_and_unknown_removals(tmp_path):
    rng = np.random.default_rng(1)
    with Catalogue.create(tmp_path / "catalogue.db") as catalogue:
        catalogue.add_items(*items_for(["x", "y"], rng), gen=1)
        with pytest.raises(StoreError, match="'y' is already in the catalogue"):
            catalogue.add_items(*items_for(["z", "y"], rng), gen=1)
        assert sorted(catalogue.live_items()) == ["x", "y"]  # the failed batch left nothing behind
        with pytest.raises(StoreError, match="not live"):
            catalogue.remove_items([1, 42], gen=2)
        assert catalogue.item(1).removed_gen is None  # nor did the failed removal
        with pytest.raises(StoreError, match="float32"):
            catalogue.add_items(*items_for(["w"], rng)[:2], np.zeros((1, DIM)), gen=1)


def test_catalogue_skipped_models_settings_and_generations(tmp_path):
    with Catalogue.create(tmp_path / "catalogue.db") as catalogue:
        assert catalogue.is_blank()
        catalogue.record_skipped([("bad.png", "not an image", 12, 5), ("empty.png", "empty file", 0, 6)])
        catalogue.record_skipped([("bad.png", "truncated", 13, 7)])
        assert [(s.path, s.reason, s.size) for s in catalogue.skipped()] == [
            ("bad.png", "truncated", 13),
            ("empty.png", "empty file", 0),
        ]
        catalogue.clear_skipped(["bad.png"])
        assert [s.path for s in catalogue.skipped()] == ["empty.png"]
        assert not catalogue.is_blank()

        assert catalogue.latest_models() is None
        pair = catalogue.add_models(
            hashing={"dir": "models/h1", "kind": "hashing", "info": {"nbits": 32}},
            latent={"dir": "models/l1", "kind": "vae"},
        )
        assert (pair.hashing.id, pair.hashing.role, pair.hashing.info) == (1, "hashing", {"nbits": 32})
        assert (pair.latent.id, pair.latent.role, pair.latent.info) == (2, "latent", {})
        assert catalogue.latest_models() == pair
        with pytest.raises(StoreError, match="needs dir, kind"):
            catalogue.add_models(hashing={"kind": "hashing"}, latent={"dir": "d", "kind": "vae"})
        assert catalogue.count_models() == 2  # the refused pair left neither record
        with pytest.raises(StoreError, match="no model"):
            catalogue.model(99)

        assert catalogue.settings() is None
        settings = StoreSettings(bits=32, latent_dim=8, source_root="/data/images")
        catalogue.set_settings(settings)
        assert catalogue.settings() == settings
        assert catalogue.get_meta("bits") == 32 and catalogue.get_meta("missing", "x") == "x"
        assert catalogue.meta()["format_version"] == 1

        assert catalogue.last_generation() == 0
        files = dict(hamming_file="h", latent_file="l", hamming_blake2b="0", latent_blake2b="0")
        catalogue.commit_generation(gen=1, n_items=0, models=pair, settings=settings, **files)
        generation = catalogue.generation(1)
        assert catalogue.last_generation() == 1 and generation.settings == settings
        assert catalogue.models_of(generation) == pair
        catalogue.set_settings(settings.with_changes(image_size=32))  # working settings move on...
        assert catalogue.generation(1).settings == settings  # ...the committed generation's do not
        with pytest.raises(StoreError, match="last committed one is 1"):
            catalogue.commit_generation(gen=3, n_items=0, models=None, settings=settings, **files)


def test_a_pair_of_models_is_recorded_in_one_transaction(tmp_path, monkeypatch):
    """A failure (or a kill) between the two model records leaves neither: never a mixed pair."""
    with Catalogue.create(tmp_path / "catalogue.db") as catalogue:
        first = catalogue.add_models(hashing={"dir": "models/h1", "kind": "hashing"}, latent={"dir": "models/l1", "kind": "vae"})
        insert = Catalogue._insert_model

        def fail_on_latent(self, role, record):
            if role == "latent":
                raise RuntimeError("killed between the two records")
            return insert(self, role, record)

        monkeypatch.setattr(Catalogue, "_insert_model", fail_on_latent)
        with pytest.raises(RuntimeError):
            catalogue.add_models(hashing={"dir": "models/h2", "kind": "hashing"}, latent={"dir": "models/l2", "kind": "vae"})
        monkeypatch.undo()
        assert catalogue.count_models() == 2 and catalogue.latest_models() == first

        # a store written by an older hashae, killed between its two separate records: a lone newer
        # hashing model is never paired with the older VAE
        catalogue.db.execute(
            "INSERT INTO models (role, dir, kind, created_at, info_json) VALUES ('hashing', 'models/h3', 'hashing', 'now', '{}')"
        )
        catalogue.db.conn.commit()
        assert catalogue.latest_models() == first


def test_names_that_are_not_utf8_are_stored_losslessly(tmp_path):
    """A real file named b'bad\\xff.png' in a folder b'x\\xfe': Python names it with surrogate
    escapes; the catalogue stores and gives back the very same str, through a reopened store."""
    folder = tmp_path / "images"
    (folder / os.fsdecode(b"x\xfe")).mkdir(parents=True)
    (folder / os.fsdecode(b"x\xfe") / os.fsdecode(b"bad\xff.png")).write_bytes(b"png bytes")
    (folder / os.fsdecode(b"broken\xfd.png")).write_bytes(b"")
    label = next(name for name in os.listdir(folder) if name.startswith("x"))
    name = os.listdir(folder / label)[0]
    broken = next(name for name in os.listdir(folder) if name.startswith("broken"))
    path = f"{label}/{name}"
    assert path == "x\udcfe/bad\udcff.png" and broken == "broken\udcfd.png"

    store_path = tmp_path / "store"
    rng = np.random.default_rng(3)
    with LocalStore.open(store_path, create=True) as store, store.writer() as writer:
        writer.set_settings(StoreSettings(bits=BITS, latent_dim=DIM, source_root=str(folder)))
        row = NewItem(path, 9, 1, hashlib.blake2b(b"png bytes").hexdigest(), label)
        _, codes, latents = items_for(["one"], rng)
        (item_id,) = writer.add_items([row], codes, latents)
        writer.add_items(*items_for(["plain.png"], rng))
        writer.record_skipped([(broken, f"empty file {broken}", 0, 1)])
        with pytest.raises(StoreError, match="already in the catalogue"):  # the stored form is unique per name
            writer.add_items([row], codes, latents)
        writer.commit(models=writer.add_models(hashing=dict(dir="models/h", kind="hashing"), latent=dict(dir="models/l", kind="vae")))

    with LocalStore.open(store_path) as store:
        item = store.snapshot().items([item_id])[item_id]
        assert (item.path, item.label) == (path, label)
        assert (folder / item.path).read_bytes() == b"png bytes"  # the name still opens the file
        assert [(s.path, s.reason) for s in store.skipped()] == [(broken, f"empty file {broken}")]
        assert sorted(store.catalogue.live_items()) == ["plain.png", path]
        stored = store.catalogue.connection.execute("SELECT path FROM items WHERE id = ?", [int(item_id)]).fetchone()[0]
        assert stored == b"x\xfe/bad\xff.png"  # the file system's own bytes
        info = store.info()
        assert info["skipped"] == [{"path": broken, "reason": f"empty file {broken}"}]
    with LocalStore.open(store_path) as store, store.writer() as writer:  # later runs go on working
        writer.clear_skipped([broken])
        writer.remove_items([writer.live_items()[path].id])
        writer.commit(models=store.latest_models())
    with LocalStore.open(store_path) as store:
        assert store.skipped() == [] and store.snapshot().n_items == 1


def test_older_settings_documents_are_read(store_v1):
    """A store whose generation and working settings were written before StoreSettings (no
    backend fields; an old key name) still opens, searches and takes commits."""
    db = sqlite3.connect(store_v1 / "catalogue.db")
    old = {"code_size": BITS, "latent_dim": DIM, "image_size": 28, "channels": 1, "source_root": "/x", "format_version": 1}
    db.execute("UPDATE generations SET settings_json = ?", [json.dumps(old)])
    db.execute("DELETE FROM meta WHERE key != 'format_version'")
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in old.items() if k != "format_version"])
    db.commit()
    db.close()
    expected = StoreSettings(bits=BITS, latent_dim=DIM, image_size=28, channels=1, source_root="/x")
    with LocalStore.open(store_v1) as store:
        assert store.settings() == expected and store.snapshot().settings == expected
        assert_snapshot_matches_brute_force(store.snapshot())
        with store.writer() as writer:
            writer.add_items(*items_for(["new"], np.random.default_rng(4)))
            writer.commit(models=store.latest_models())
        assert store.snapshot().settings == expected and store.snapshot().rebuilt_because is None


def test_a_file_that_is_not_a_catalogue_is_refused(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "catalogue.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open the catalogue"):
        LocalStore.open(tmp_path / "store")


@pytest.mark.parametrize("create", [False, True])
def test_an_empty_or_foreign_catalogue_is_refused_and_left_untouched(store_v1, tmp_path, create):
    """A zero-length catalogue.db is a damaged store, not a new one: every command refuses it with
    one line and writes nothing (the models stay); so does an SQLite file of another program."""
    models_before = sorted(p.name for p in (store_v1 / "models").iterdir()) if (store_v1 / "models").is_dir() else []
    (store_v1 / "catalogue.db").write_bytes(b"")
    with pytest.raises(StoreError, match="empty file, not a hashae catalogue") as refused:
        LocalStore.open(store_v1, create=create)
    assert "\n" not in str(refused.value)
    assert (store_v1 / "catalogue.db").read_bytes() == b""
    assert sorted(p.name for p in (store_v1 / "models").iterdir()) == models_before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "catalogue.db")
    db.execute("CREATE TABLE photos (name TEXT)")
    db.commit()
    db.close()
    before = (foreign / "catalogue.db").read_bytes()
    with pytest.raises(StoreError, match="not a hashae catalogue .*lacks the tables"):
        LocalStore.open(foreign, create=create)
    assert (foreign / "catalogue.db").read_bytes() == before


def test_catalogue_of_a_newer_format_is_refused(tmp_path):
    Catalogue.create(tmp_path / "catalogue.db").close()
    db = sqlite3.connect(tmp_path / "catalogue.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="format version 99"):
        Catalogue(tmp_path / "catalogue.db")


# -------------------------------------------------------------------------------------------- store
def test_missing_store_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match=r"no hashae store at .* run `hashae index FOLDER` first"):
        LocalStore.open(tmp_path / "nowhere")
    with LocalStore.open(tmp_path / "new", create=True) as store:
        assert store.settings() is None and store.latest_models() is None and store.skipped() == []
        assert store.info()["empty"] and store.info()["generation"] == 0
        with pytest.raises(StoreError, match="no committed index yet"):
            store.snapshot()
        with store.writer() as writer, pytest.raises(StoreError, match="bits, latent_dim"):
            writer.add_items(*items_for(["a"], np.random.default_rng(0)))
    assert not (tmp_path / "new").exists()
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreError, match="a-file is not a folder"):
        LocalStore.open(tmp_path / "a-file", create=True)


def test_a_store_is_made_only_once_something_is_recorded(tmp_path):
    """create=True writes nothing by itself; a writer that fails before recording anything (here:
    30 bits) takes back the folders it made, parents included; one that records something keeps them."""
    path = tmp_path / "deep" / "er" / "store"
    with LocalStore.open(path, create=True) as store:
        assert not (tmp_path / "deep").exists()
        with pytest.raises(ConfigError, match="multiple of 8"), store.writer():
            StoreSettings(bits=30)
        assert not (tmp_path / "deep").exists()
        with store.writer() as writer:
            writer.set_settings(StoreSettings(bits=BITS, latent_dim=DIM))
        assert store.settings() == StoreSettings(bits=BITS, latent_dim=DIM)
    made = {p.name for p in path.iterdir()} - {"catalogue.db-wal", "catalogue.db-shm"}
    assert sorted(made) == ["catalogue.db", "indexes", "models", "write.lock"]
    with LocalStore.open(path) as store:
        info = store.info()
        assert info["empty"] and (info["items"], info["generation"], info["bits"]) == (0, 0, BITS)

    def full_disk(path):
        raise StoreError("cannot make the catalogue: no space left on device")

    with LocalStore.open(tmp_path / "full", create=True) as store, pytest.MonkeyPatch.context() as patch:
        patch.setattr(Catalogue, "create", full_disk)
        with pytest.raises(StoreError, match="no space"), store.writer():
            pass
    assert not (tmp_path / "full").exists()

    existing = tmp_path / "existing"  # a folder the user made: kept, only our files go
    existing.mkdir()
    with LocalStore.open(existing, create=True) as store, store.writer():
        (existing / "models" / "unrecorded-checkpoint").mkdir()
    assert list(existing.iterdir()) == []


def test_reading_writes_nothing(store_v1):
    """Opening, snapshots, searches and info never change the catalogue or any store file (SQLite's
    WAL side files aside)."""

    def files():
        return {p.relative_to(store_v1): p.read_bytes() for p in store_v1.rglob("*")
                if p.is_file() and not p.name.endswith(("-wal", "-shm"))}

    before = files()
    with LocalStore.open(store_v1) as store:
        snapshot = store.snapshot()
        snapshot.search_hamming(snapshot.codes_of(snapshot.item_ids()[:3]), k=3)
        store.info(), store.settings(), store.skipped(), store.latest_models()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.catalogue.connection.execute("DELETE FROM meta")
    assert files() == before


def hashae_info(store_path, *args):
    from typer.testing import CliRunner

    from hashae.cli.main import app

    return CliRunner().invoke(app, ["info", "--store", str(store_path), *args], catch_exceptions=False)


def test_info_says_when_a_store_is_empty_and_shows_odd_names_escaped(tmp_path, store_v1):
    path = tmp_path / "never-committed"
    with LocalStore.open(path, create=True) as store, store.writer() as writer:
        writer.set_settings(StoreSettings())
        writer.record_skipped([(os.fsdecode(b"bad\xff.png"), "not an image", 3, 1)])
    result = hashae_info(path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"the store at {path} is empty: run `hashae index FOLDER`"
    assert "None" not in result.stdout and "  bad\\xff.png: not an image" in result.stdout
    document = json.loads(hashae_info(path, "--json").stdout)
    assert document["empty"] and document["skipped"] == [{"path": "bad\udcff.png", "reason": "not an image"}]

    result = hashae_info(store_v1)
    assert result.exit_code == 0 and "empty" not in result.stdout
    assert f"codes       {BITS} bits, VAE latent {DIM}" in result.stdout and "items       240" in result.stdout
    result = hashae_info(tmp_path / "nowhere")
    assert result.exit_code == 1 and "no hashae store at" in result.stderr and len(result.stderr.splitlines()) == 1


def test_snapshot_equals_brute_force_over_visible_rows(reference_stores):
    for path, version, gen in ((reference_stores[0], 1, 1), (reference_stores[1], 2, 2)):
        with LocalStore.open(path) as store:
            snapshot = store.snapshot()
            assert snapshot.gen == gen and snapshot.rebuilt_because is None
            assert visible_contents(store, gen) == expected_contents(version)
            assert_snapshot_matches_brute_force(snapshot)


def test_item_metadata_errors_and_info(reference_stores):
    with LocalStore.open(reference_stores[1]) as store:
        snapshot = store.snapshot()
        ids, codes, latents = store.catalogue.items_visible(2)
        first = snapshot.items([ids[0]])[ids[0]]
        hit = snapshot.search_hamming(codes[:1], k=3)[0][0]
        assert hit.id == first.id and (first.id, first.path, first.label) == (51, "p050", "class2")
        assert hit.as_dict() == {"id": 51, "distance": 0, "path": None, "label": None}
        assert isinstance(snapshot.search_hamming(codes[:1], k=1)[0][0].distance, int)
        assert isinstance(snapshot.search_latent(latents[:1], k=1)[0][0].distance, float)
        assert len(snapshot.search_latent(latents[:1], k=10_000)[0]) == 270  # no padding in hit lists
        assert len(snapshot.search_hamming(codes[:1], k=10_000)[0]) == 270
        for search, bad in (
            (snapshot.search_hamming, dict(k=0)),
            (snapshot.search_latent, dict(k=-1)),
            (snapshot.range_hamming, dict(radius=-1)),
            (snapshot.search_hamming, dict(k=True)),
        ):
            with pytest.raises(SearchArgumentError):
                search(codes[:1] if search != snapshot.search_latent else latents[:1], **bad)
        with pytest.raises(UnknownItemError, match="99999"):
            snapshot.codes_of(np.array([ids[0], 99999]))
        with pytest.raises(UnknownItemError, match="99999"):
            snapshot.latents_of(np.array([99999]))
        assert snapshot.items([99999]) == {}

        info = store.info()
        assert info["items"] == 270 and info["generation"] == 2 and info["bits"] == BITS
        assert info["latent_dim"] == DIM and info["generations"] == 2 and not info["empty"]
        assert info["pending"] == {"added": 0, "removed": 0}
        assert info["models"]["hashing"]["dir"] == "models/hashing-1"
        assert info["settings"] == StoreSettings(bits=BITS, latent_dim=DIM).to_dict()
        models = snapshot.models()
        assert isinstance(models, ModelPair) and models == store.latest_models()
        assert (models.hashing.role, models.latent.role) == ("hashing", "latent")
        assert snapshot.model_dir(models.hashing) == reference_stores[1] / "models" / "hashing-1"
        assert snapshot.settings.image_size == 28 and snapshot.committed_at == info["committed_at"]


def test_purge_keeps_the_previous_generation(reference_stores, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(reference_stores[1], path)
    with LocalStore.open(path) as store:
        assert sorted(p.name for p in store.indexes_dir.iterdir()) == [
            "hamming-1.bin", "hamming-2.bin", "latent-1.faiss", "latent-2.faiss"
        ]
        assert store.catalogue.count_visible(1) == 240  # generation 1 still readable
        with store.writer() as writer:
            writer.remove_items([store.catalogue.live_items()["p299"].id])
            assert writer.commit(models=store.latest_models()) == 3
        assert sorted(p.name for p in store.indexes_dir.iterdir()) == [
            "hamming-2.bin", "hamming-3.bin", "latent-2.faiss", "latent-3.faiss"
        ]
        assert store.catalogue.count_visible(2) == 270 and store.catalogue.count_visible(3) == 269
        purged = store.catalogue.connection.execute("SELECT count(*) FROM items WHERE removed_gen <= 2").fetchone()[0]
        assert purged == 0  # rows only generation 1 could see are gone


def test_second_writer_is_refused_while_another_process_holds_the_lock(store_v1):
    holder_code = (
        "import sys, time\nfrom hashae.index.backends.local.store import LocalStore\n"
        f"writer = LocalStore.open({str(store_v1)!r}).writer()\nwriter.__enter__()\n"
        "print('locked', flush=True)\ntime.sleep(60)\n"
    )
    command = [sys.executable, "-c", holder_code]
    holder = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with LocalStore.open(store_v1) as store:
            with pytest.raises(StoreError, match=f"another hashae writer \\(pid {holder.pid}\\)"):
                with store.writer():
                    pass
            assert store.snapshot().gen == 1  # readers never take the lock
    finally:
        holder.kill()
        holder.wait()
    with LocalStore.open(store_v1) as store, store.writer() as writer:  # the kernel released the lock
        assert writer.gen == 2
        with pytest.raises(StoreError, match="another hashae writer"):  # same process, second writer
            with store.writer():
                pass


def test_reader_keeps_its_generation_while_a_writer_builds_the_next(store_v1):
    reader_store, writer_store = LocalStore.open(store_v1), LocalStore.open(store_v1)
    snapshot = reader_store.snapshot()
    ids, codes, latents = reader_store.catalogue.items_visible(1)
    before = (snapshot.search_hamming(codes[:10], k=5), snapshot.search_latent(latents[:10], k=5))
    with writer_store.writer() as writer:
        writer.remove_items(ids[:100].tolist())
        writer.add_items(*items_for([f"new{i}" for i in range(50)], np.random.default_rng(5)))
        assert writer.pending() == (50, 100)
        assert reader_store.snapshot().gen == 1  # pending rows are invisible to new readers too
        assert not snapshot.is_stale()
        writer.commit(models=writer_store.latest_models())
    assert snapshot.is_stale()
    after = (snapshot.search_hamming(codes[:10], k=5), snapshot.search_latent(latents[:10], k=5))
    assert after == before
    assert snapshot.items([after[0][0][0].id])[after[0][0][0].id].path == "p000"  # removed at 2, still described
    np.testing.assert_array_equal(snapshot.codes_of(ids[:100]), codes[:100])  # and its vectors too
    fresh = reader_store.snapshot()
    assert fresh.gen == 2 and fresh.n_items == 190 and not fresh.is_stale()
    assert_snapshot_matches_brute_force(fresh)
    reader_store.close()
    writer_store.close()


def corrupt_latent_file(store):
    path = store.indexes_dir / "latent-1.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte FAISS itself would happily load
    path.write_bytes(bytes(data))


def replace_with_smaller_index(store):
    """Valid files holding one item fewer, with digests updated: only the count check can tell."""
    snapshot = store.snapshot()
    snapshot.hamming.remove(np.array([1]))
    snapshot.latent.remove(np.array([1]))
    files = (("hamming", "hamming-1.bin", snapshot.hamming), ("latent", "latent-1.faiss", snapshot.latent))
    db = sqlite3.connect(store.layout.catalogue)
    for column, name, index in files:
        data = index.to_bytes()
        (store.indexes_dir / name).write_bytes(data)
        digest = hashlib.blake2b(data, digest_size=32).hexdigest()
        db.execute(f"UPDATE generations SET {column}_blake2b = ? WHERE gen = 1", [digest])
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda store: (store.indexes_dir / "hamming-1.bin").unlink(), "cannot read hamming-1.bin"),
        (corrupt_latent_file, "latent-1.faiss does not match its recorded blake2b digest"),
        (replace_with_smaller_index, "hold 239 and 239 items, the catalogue 240"),
    ],
)
def test_damaged_index_files_are_rebuilt_from_the_catalogue(store_v1, damage, reason):
    with LocalStore.open(store_v1) as store:
        damage(store)
        snapshot = store.snapshot()
        assert reason in snapshot.rebuilt_because
        assert_snapshot_matches_brute_force(snapshot)
        with store.writer() as writer:  # the next commit falls back to a rebuild and writes good files
            writer.add_items(*items_for(["extra"], np.random.default_rng(2)))
            writer.commit(models=store.latest_models())
        healthy = store.snapshot()
        assert healthy.rebuilt_because is None and healthy.n_items == 241
        assert_snapshot_matches_brute_force(healthy)


def test_incremental_commit_with_an_hnsw_latent_index(tmp_path):
    path = tmp_path / "store"
    exec_driver = {}
    exec(f"BITS, DIM, BATCH, HNSW_THRESHOLD = {BITS}, {DIM}, 100, 100\n" + DRIVER, exec_driver)
    exec_driver["run"](path, 1)
    exec_driver["run"](path, 2)
    with LocalStore.open(path, hnsw_threshold=100) as store:
        snapshot = store.snapshot()
        assert snapshot.latent.is_hnsw and snapshot.rebuilt_because is None
        ids, _, latents = store.catalogue.items_visible(2)
        assert sorted(snapshot.latent.ids()) == ids.tolist()
        found = snapshot.search_latent(latents[:30], k=1)
        assert np.mean([hits[0].id == i for hits, i in zip(found, ids[:30])]) >= 0.95


# ------------------------------------------------------------------------------------- crash safety
CRASH_STEPS = [
    "batch_added",  # after the first batch of rows was committed to SQLite
    "inside_batch_transaction",  # in the middle of a batch's transaction
    "indexes_built",  # (temp_files_written has a test of its own below)
    "files_renamed",  # files in place, generation not committed
    "generation_committed",  # committed, nothing purged
    "purged",
]


def assert_recovers(store_path, reference_state, *, committed_gen):
    """After a kill: the store opens on an intact generation; a re-run reaches the reference state."""
    with LocalStore.open(store_path) as store:
        snapshot = store.snapshot()
        assert snapshot.gen == committed_gen
        assert snapshot.rebuilt_because is None  # the committed generation's files are whole
        assert visible_contents(store, 1) == expected_contents(1)
        if committed_gen == 2:
            assert visible_contents(store, 2) == expected_contents(2)
        assert_snapshot_matches_brute_force(snapshot)
    driver["run"](store_path, 2)
    assert store_state(store_path) == reference_state


@pytest.fixture(scope="module")
def reference_state(reference_stores):
    return store_state(reference_stores[1])


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_sigkill_at_each_step_of_a_writer_run(store_v1, reference_state, step):
    result = run_driver_in_subprocess(store_v1, 2, crash=step)
    assert result.returncode == -signal.SIGKILL, result.stderr
    committed = 2 if step in ("generation_committed", "purged") else 1
    assert_recovers(store_v1, reference_state, committed_gen=committed)


def test_sigkill_at_random_moments(store_v1, reference_state, tmp_path):
    for delay in (0.03, 0.1, 0.5):  # early, mid-run, late: wherever a kill lands, the invariants hold
        path = tmp_path / f"kill-{delay}"
        shutil.copytree(store_v1, path)
        code = DRIVER_SETTINGS.replace("25,", "5,") + DRIVER + f"\nrun({str(path)!r}, 2)\n"
        process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "writing"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with LocalStore.open(path) as store:
            committed = store.catalogue.last_generation()
        assert committed in (1, 2)
        assert_recovers(path, reference_state, committed_gen=committed)


def test_a_killed_writer_leaves_pending_rows_and_temp_files_to_the_next(store_v1, reference_state):
    result = run_driver_in_subprocess(store_v1, 2, crash="temp_files_written")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert sorted(p.name for p in (store_v1 / "indexes").iterdir()) == [
        "hamming-1.bin", "hamming-2.bin.tmp", "latent-1.faiss", "latent-2.faiss.tmp"
    ]
    with LocalStore.open(store_v1) as store:
        assert store.info()["pending"] == {"added": 80, "removed": 50}
    # the lock died with the writer; the re-run commits the pending rows and removes the temp files
    assert_recovers(store_v1, reference_state, committed_gen=1)


def test_readers_repair_in_memory_only(store_v1):
    """A reader never writes: after rebuilding a missing file it leaves the folder as it found it."""
    (store_v1 / "indexes" / "hamming-1.bin").unlink()
    with LocalStore.open(store_v1) as store:
        assert store.snapshot().rebuilt_because
        assert store.info()["generation"] == 1
    assert os.listdir(store_v1 / "indexes") == ["latent-1.faiss"]
