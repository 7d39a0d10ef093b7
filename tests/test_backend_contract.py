"""The store backend contract, run over every backend through the Protocols of
hashae.index.backends.base only.

Exact backends must equal brute force, ties by id, for Hamming k-NN, Hamming range and latent k-NN,
on random codes and on clustered codes with many ties. Every backend, exact or approximate, must pass
the looser checks: hits are true items at their true distances, no duplicates, sorted by (distance,
id), range results grow with the radius and hold every item at radius = bits. Writes round-trip
through commit, an older view keeps its generation, and a reopened store answers the same.

Adding a backend is one line in BACKENDS (the StoreSettings fields that select it), plus EXACT
when it is exact.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest

from hashae.codes import hamming_distances, pack_bits
from hashae.index.backends import open_store
from hashae.index.backends.base import (
    ItemInfo,
    ModelPair,
    NewItem,
    ReadView,
    StoreBackend,
    StoreError,
    UnknownItemError,
    WriteTransaction,
)
from hashae.index.settings import StoreSettings

REPO = Path(__file__).resolve().parents[1]
BACKENDS = {
    "local": {},
    "milvus": {"backend": "milvus"},
}
EXACT = {"local", "milvus"}
BITS = (32, 64)
DIM = 6
N_ITEMS = 700
N_QUERIES = 12

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


# ------------------------------------------------------------------------------------------- data
def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)


def clustered_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Codes a few bits around 5 centres, a quarter of them exact copies of others: many ties."""
    centres = rng.random((5, bits)) < 0.5
    flips = rng.random((n, bits)) < 0.03
    codes = centres[rng.integers(0, 5, n)] ^ flips
    copies = rng.choice(n, n // 4, replace=False)
    codes[copies] = codes[rng.integers(0, n, len(copies))]
    return pack_bits(codes)


def tied_latents(rng: np.random.Generator, n: int) -> np.ndarray:
    """Small integer vectors: exact float32 distances, many equal ones and duplicate vectors."""
    return rng.integers(0, 3, (n, DIM)).astype(np.float32)


def gaussian_latents(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


CODE_KINDS = {"random": random_codes, "clustered": clustered_codes}
LATENT_KINDS = {"tied": tied_latents, "gaussian": gaussian_latents}


def new_items(names: list[str]) -> list[NewItem]:
    return [
        NewItem(name, len(name), 1_700_000_000_000_000_000 + i, hashlib.blake2b(name.encode()).hexdigest(), f"class{i % 3}")
        for i, name in enumerate(names)
    ]


def record_models(writer: WriteTransaction, store: StoreBackend) -> ModelPair:
    return store.latest_models() or writer.add_models(
        hashing={"dir": "models/hashing-1", "kind": "hashing", "info": {}},
        latent={"dir": "models/latent-1", "kind": "vae", "info": {}},
    )


def fill(store: StoreBackend, settings: StoreSettings, codes, latents, names) -> np.ndarray:
    """One writer: set settings, add the rows, commit. Returns their ids."""
    with store.writer() as writer:
        writer.set_settings(settings)
        models = record_models(writer, store)
        ids = writer.add_items(new_items(names), codes, latents)
        writer.commit(models=models)
    return ids


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(params=list(BACKENDS))
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path):
    """make_store(bits) -> (store, settings): a new, empty store of this backend."""
    opened = []

    def make(bits: int, name: str = "store") -> tuple[StoreBackend, StoreSettings]:
        store = open_store(tmp_path / name, create=True, **BACKENDS[backend])
        opened.append(store)
        return store, StoreSettings(bits=bits, latent_dim=DIM, **BACKENDS[backend])

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=[(bits, codes, latents) for bits in BITS for codes in CODE_KINDS for latents in LATENT_KINDS],
                ids=lambda p: f"{p[0]}bits-{p[1]}-{p[2]}")
def filled(request, make_store):
    """(view, ids, codes, latents, queries, query_latents): a committed store of N_ITEMS items."""
    bits, code_kind, latent_kind = request.param
    rng = np.random.default_rng(bits + len(code_kind) + len(latent_kind))
    codes = CODE_KINDS[code_kind](rng, N_ITEMS, bits)
    latents = LATENT_KINDS[latent_kind](rng, N_ITEMS)
    store, settings = make_store(bits)
    ids = fill(store, settings, codes, latents, [f"img{i:04d}.png" for i in range(N_ITEMS)])
    # queries: stored codes (distance-0 ties), codes a few bits off them, and fresh ones
    picked = rng.choice(N_ITEMS, N_QUERIES // 2, replace=False)
    near = codes[picked].copy()
    near[:, 0] ^= 0b101
    queries = np.concatenate([codes[picked[:3]], near[:3], CODE_KINDS[code_kind](rng, N_QUERIES - 6, bits)])
    query_latents = np.concatenate([latents[picked[:3]], LATENT_KINDS[latent_kind](rng, N_QUERIES - 3)])
    return store.snapshot(), ids, codes, latents, queries, query_latents


def brute_force(distances: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    """All (id, distance) sorted by (distance, id)."""
    order = np.lexsort((ids, distances))
    return [(int(ids[i]), distances[i].item()) for i in order]


def pairs(hits) -> list[tuple[int, float]]:
    return [(hit.id, hit.distance) for hit in hits]


def exact_only(backend: str) -> None:
    if backend not in EXACT:
        pytest.skip(f"{backend} is an approximate backend")


# ------------------------------------------------------------------------- exact: brute force
@pytest.mark.parametrize("k", [1, 7, 40, N_ITEMS + 5])
def test_search_hamming_equals_brute_force(backend, filled, k):
    exact_only(backend)
    view, ids, codes, _, queries, _ = filled
    truth = hamming_distances(queries, codes)
    for hits, distances in zip(view.search_hamming(queries, k=k), truth):
        assert pairs(hits) == brute_force(distances, ids)[:k]
        assert all(isinstance(hit.distance, int) for hit in hits)


def test_range_hamming_equals_brute_force(backend, filled):
    exact_only(backend)
    view, ids, codes, _, queries, _ = filled
    truth = hamming_distances(queries, codes)
    for radius in (0, 1, 2, 4, 8, 12):
        for hits, distances in zip(view.range_hamming(queries, radius=radius), truth):
            assert pairs(hits) == [(i, d) for i, d in brute_force(distances, ids) if d <= radius]


@pytest.mark.parametrize("k", [1, 10, 50])
def test_search_latent_equals_brute_force(backend, filled, k):
    exact_only(backend)
    view, ids, _, latents, _, query_latents = filled
    truth = ((query_latents[:, None, :].astype(np.float64) - latents[None]) ** 2).sum(-1)
    for hits, distances in zip(view.search_latent(query_latents, k=k), truth):
        want = brute_force(distances, ids)[:k]
        assert [hit.id for hit in hits] == [i for i, _ in want]
        np.testing.assert_allclose([hit.distance for hit in hits], [d for _, d in want], rtol=1e-5, atol=1e-6)
        assert all(isinstance(hit.distance, float) for hit in hits)


# ------------------------------------------------------------------ every backend: looser checks
def assert_true_hits(hits, true_distance: dict[int, float], *, latent: bool = False) -> None:
    """Known ids at their true distances, no duplicates, sorted by (distance, id)."""
    got = pairs(hits)
    assert len({i for i, _ in got}) == len(got), "duplicate ids"
    for item_id, distance in got:
        if latent:
            assert distance == pytest.approx(true_distance[item_id], rel=1e-5, abs=1e-6)
        else:
            assert distance == true_distance[item_id]
    assert got == sorted(got, key=lambda pair: (pair[1], pair[0]))


def test_range_hamming_is_a_subset_of_the_truth_monotone_and_whole_at_full_radius(filled):
    view, ids, codes, _, queries, _ = filled
    bits = view.settings.bits
    truth = hamming_distances(queries, codes)
    previous = [set() for _ in queries]
    for radius in (0, 1, 3, 6, bits // 2, bits):
        for q, hits in enumerate(view.range_hamming(queries, radius=radius)):
            true_distance = dict(zip(ids.tolist(), truth[q].tolist()))
            assert_true_hits(hits, true_distance)
            found = {hit.id for hit in hits}
            assert all(hit.distance <= radius for hit in hits)
            assert previous[q] <= found, f"radius {radius} lost hits of a smaller radius"
            previous[q] = found
    assert all(found == set(ids.tolist()) for found in previous), "radius = bits must return every item"


def test_knn_results_are_true_items_without_duplicates(filled):
    view, ids, codes, latents, queries, query_latents = filled
    hamming_truth = hamming_distances(queries, codes)
    latent_truth = ((query_latents[:, None, :].astype(np.float64) - latents[None]) ** 2).sum(-1)
    for k in (1, 10, N_ITEMS + 5):
        for q, hits in enumerate(view.search_hamming(queries, k=k)):
            assert len(hits) == min(k, N_ITEMS)
            assert_true_hits(hits, dict(zip(ids.tolist(), hamming_truth[q].tolist())))
            assert hits[0].distance == hamming_truth[q].min()  # the nearest distance is never missed
        for q, hits in enumerate(view.search_latent(query_latents, k=k)):
            assert 0 < len(hits) <= min(k, N_ITEMS)
            assert_true_hits(hits, dict(zip(ids.tolist(), latent_truth[q].tolist())), latent=True)


def test_vectors_and_metadata_by_id(filled):
    view, ids, codes, latents, _, _ = filled
    assert isinstance(view, ReadView) and view.n_items == N_ITEMS
    np.testing.assert_array_equal(view.item_ids(), np.sort(ids))
    assert view.item_ids().dtype == np.int64
    order = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(view.codes_of(ids[order]), codes[order])
    np.testing.assert_array_equal(view.latents_of(ids[order]), latents[order])
    assert view.codes_of(ids[:0]).shape == (0, view.settings.bits // 8)
    with pytest.raises(UnknownItemError):
        view.codes_of(np.array([ids.max() + 1000]))
    with pytest.raises(UnknownItemError):
        view.latents_of(np.array([ids[0], ids.max() + 1000]))
    items = view.items(ids[:5].tolist() + [int(ids.max()) + 1000])
    assert sorted(items) == sorted(ids[:5].tolist())
    first = items[int(ids[0])]
    assert isinstance(first, ItemInfo)
    assert (first.path, first.label, first.size, first.added_gen, first.removed_gen) == ("img0000.png", "class0", 11, view.gen, None)
    assert first.content_hash == hashlib.blake2b(b"img0000.png").hexdigest()


# ------------------------------------------------------------------------------ writes, reopening
def test_writes_round_trip_through_commits_and_reopening(backend, make_store, tmp_path):
    rng = np.random.default_rng(7)
    store, settings = make_store(32)
    assert isinstance(store, StoreBackend) and store.settings() is None and store.latest_models() is None
    codes, latents = clustered_codes(rng, 300, 32), tied_latents(rng, 300)
    names = [f"a{i:03d}.png" for i in range(300)]
    ids = fill(store, settings, codes, latents, names)
    old_view = store.snapshot()
    assert old_view.gen == 1 and old_view.n_items == 300 and old_view.settings == settings
    assert store.settings() == settings and old_view.models() == store.latest_models()

    with store.writer() as writer:
        assert isinstance(writer, WriteTransaction)
        live = writer.live_items()
        assert sorted(live) == names and live["a000.png"].id == ids[0]
        writer.remove_items([live[name].id for name in names[:40]])
        new_codes, new_latents = random_codes(rng, 25, 32), gaussian_latents(rng, 25)
        new_ids = writer.add_items(new_items([f"b{i:02d}.png" for i in range(25)]), new_codes, new_latents)
        writer.update_mtimes([(int(ids[50]), 42)])
        writer.record_skipped([("broken.png", "not an image", 3, 1), ("empty.png", "empty file", 0, 1)])
        writer.clear_skipped(["empty.png"])
        assert writer.pending() == (25, 40)
        assert store.snapshot().gen == 1  # pending changes are invisible until the commit
        gen = writer.commit(models=store.latest_models())
    assert gen == 2 and old_view.is_stale()
    assert [(s.path, s.reason) for s in store.skipped()] == [("broken.png", "not an image")]

    kept = np.concatenate([ids[40:], new_ids])
    all_codes, all_latents = np.concatenate([codes[40:], new_codes]), np.concatenate([latents[40:], new_latents])
    view = store.snapshot()
    assert view.gen == 2 and not view.is_stale() and view.n_items == 285
    np.testing.assert_array_equal(view.item_ids(), np.sort(kept))
    np.testing.assert_array_equal(view.codes_of(kept), all_codes)
    np.testing.assert_array_equal(view.latents_of(kept), all_latents)
    assert view.items([int(ids[50])])[int(ids[50])].mtime_ns == 42
    found = {hit.id for hits in view.range_hamming(codes[:40], radius=4) for hit in hits}
    assert found and found <= set(kept.tolist())  # removed items are never found again
    # the older view still answers from generation 1
    assert old_view.n_items == 300 and {hit.id for hit in old_view.range_hamming(codes[:1], radius=32)[0]} == set(ids.tolist())
    np.testing.assert_array_equal(old_view.codes_of(ids[:40]), codes[:40])

    queries = np.concatenate([all_codes[:5], random_codes(rng, 5, 32)])
    query_latents = np.concatenate([all_latents[:5], gaussian_latents(rng, 5)])
    answers = (view.search_hamming(queries, k=9), view.range_hamming(queries, radius=3), view.search_latent(query_latents, k=9))
    store.close()
    with open_store(tmp_path / "store") as reopened:
        again = reopened.snapshot()
        assert again.gen == 2 and again.settings == settings
        assert (again.search_hamming(queries, k=9), again.range_hamming(queries, radius=3), again.search_latent(query_latents, k=9)) == answers
        assert reopened.info()["items"] == 285 and reopened.info()["generation"] == 2
        assert [s.path for s in reopened.skipped()] == ["broken.png"]


def test_a_writer_left_without_commit_leaves_its_rows_to_the_next(make_store):
    rng = np.random.default_rng(8)
    store, settings = make_store(64)
    fill(store, settings, random_codes(rng, 20, 64), gaussian_latents(rng, 20), [f"a{i}" for i in range(20)])
    with store.writer() as writer:
        writer.add_items(new_items(["late.png"]), random_codes(rng, 1, 64), gaussian_latents(rng, 1))
    assert store.snapshot().n_items == 20
    with store.writer() as writer:
        assert "late.png" in writer.live_items() and writer.pending() == (1, 0)
        writer.commit(models=store.latest_models())
    assert store.snapshot().n_items == 21


def test_settings_and_models_are_frozen_per_generation(make_store):
    rng = np.random.default_rng(9)
    store, settings = make_store(32)
    fill(store, settings, random_codes(rng, 10, 32), gaussian_latents(rng, 10), [f"a{i}" for i in range(10)])
    first = store.snapshot()
    with store.writer() as writer:
        moved = settings.with_changes(source_root="/elsewhere", image_size=32)
        writer.set_settings(moved)
        newer = writer.add_models(
            hashing={"dir": "models/hashing-2", "kind": "hashing"}, latent={"dir": "models/latent-2", "kind": "vae"}
        )
        assert store.latest_models() == newer and first.models() != newer
        writer.remove_items(item.id for item in writer.live_items().values())
        writer.add_items(new_items(["x"]), random_codes(rng, 1, 32), gaussian_latents(rng, 1))
        writer.commit(models=newer)
    assert first.settings == settings and store.snapshot().settings == moved == store.settings()
    assert store.snapshot().models() == newer
    assert store.snapshot().model_dir(newer.hashing).name == "hashing-2"


# --------------------------------------------------------------------------- the package boundary
LIBRARY = ("hashae", "index", "cli")
BACKEND_PACKAGE = REPO / "index" / "backends"


def module_name(path: Path) -> str:
    """The importable name of a library source file (index/ and cli/ install under hashae)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["hashae", *parts] if parts[0] in ("index", "cli") else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module (and imported name) a source file imports, relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return found


INFO_KEYS = {
    "store", "empty", "generation", "committed_at", "items", "pending", "skipped", "skipped_by_reason",
    "bits", "latent_dim", "settings", "generations", "models",
}


def test_model_records_missing_stores_and_info_alike_on_every_backend(backend, make_store, tmp_path):
    """What both backends do through index/backends/common.py: model folders recorded relative to
    the store (one outside it refused), roles checked at commit, an unrecorded checkpoint folder
    taken back by the next writer, one message for a missing store, and info() with the same keys
    (a backend may add its own)."""
    store, settings = make_store(32)
    assert store.info()["empty"] is True and set(store.info()) == INFO_KEYS
    with pytest.raises(StoreError, match="run `hashae index FOLDER`"):  # nothing committed (nor made) yet
        store.snapshot()
    with pytest.raises(StoreError, match=r"no hashae (Milvus )?store at .* run `hashae index FOLDER` first"):
        open_store(tmp_path / "nothing-here")
    with store.writer() as writer:
        writer.set_settings(settings)
        for name in ("hashing-1", "latent-1"):
            (store.models_dir / name).mkdir(parents=True)
        models = writer.add_models(
            hashing={"dir": str((store.models_dir / "hashing-1").absolute()), "kind": "hashing"},
            latent={"dir": "models/latent-1", "kind": "vae", "info": {"epochs": 3}},
        )
        assert (models.hashing.dir, models.latent.dir, models.latent.info["epochs"]) == ("models/hashing-1", "models/latent-1", 3)
        with pytest.raises(StoreError, match="outside the store"):
            writer.add_models(hashing={"dir": str(tmp_path / "elsewhere"), "kind": "hashing"}, latent={"dir": "models/x", "kind": "vae"})
        writer.add_items(new_items(["a.png"]), random_codes(np.random.default_rng(1), 1, 32), gaussian_latents(np.random.default_rng(2), 1))
        with pytest.raises(StoreError, match="is not a hashing model"):
            writer.commit(models=ModelPair(models.latent, models.hashing))
        writer.commit(models=models)
    (store.models_dir / "leftover").mkdir()  # a checkpoint saved by a writer killed before recording it
    with store.writer():
        pass
    assert sorted(p.name for p in store.models_dir.iterdir()) == ["hashing-1", "latent-1"]
    view = store.snapshot()
    assert view.models() == models == store.latest_models() and view.model_dir(models.latent) == store.models_dir / "latent-1"
    info = store.info()
    assert INFO_KEYS <= set(info) and set(info) - INFO_KEYS <= {"backend"}
    assert (info["generation"], info["items"], info["pending"]) == (1, 1, {"added": 0, "removed": 0})
    assert info["models"]["hashing"]["dir"] == "models/hashing-1" and info["committed_at"] == view.committed_at


def test_nothing_outside_the_backend_package_imports_the_local_backend():
    offenders = []
    for package in LIBRARY:
        for path in sorted((REPO / package).rglob("*.py")):
            if BACKEND_PACKAGE in path.parents:
                continue
            local = sorted(name for name in imported_modules(path) if name.startswith("hashae.index.backends.local"))
            if local:
                offenders.append(f"{path.relative_to(REPO)}: {', '.join(local)}")
    assert not offenders, "use hashae.index.backends.open_store and the names in base.py:\n" + "\n".join(offenders)
