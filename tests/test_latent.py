"""LatentIndex against brute force: ties by id, -1 padding, removal, serialization, HNSW recall."""

import faiss
import numpy as np
import pytest

from hashae.index.backends.local.latent import LatentError, LatentIndex

DIM = 6


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def brute_force(latents, ids, queries, k):
    """Squared L2 k-NN sorted by (distance, id), padded with (inf, -1)."""
    dist = ((queries[:, None, :].astype(np.float64) - latents[None, :, :]) ** 2).sum(-1)
    out_d = np.full((len(queries), k), np.inf)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for row, d in enumerate(dist):
        order = np.lexsort((ids, d))[:k]
        out_d[row, : len(order)], out_i[row, : len(order)] = d[order], ids[order]
    return out_d, out_i


@pytest.fixture
def tied_data():
    """Small integer vectors: many exact duplicates and equal distances, to exercise tie order."""
    rng = np.random.default_rng(0)
    latents = rng.integers(0, 3, (400, DIM)).astype(np.float32)
    ids = rng.permutation(100_000)[:400].astype(np.int64)
    queries = rng.integers(0, 3, (25, DIM)).astype(np.float32)
    return latents, ids, queries


@pytest.mark.parametrize("k", [1, 7, 50, 399, 400])
def test_flat_search_equals_brute_force_ties_included(tied_data, k):
    latents, ids, queries = tied_data
    index = LatentIndex(DIM)
    index.add(latents, ids)
    dist, found = index.search(queries, k=k)
    want_d, want_i = brute_force(latents, ids, queries, k)
    assert dist.dtype == np.float32 and found.dtype == np.int64
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-6)


def test_padding_when_fewer_than_k(tied_data):
    latents, ids, queries = tied_data
    index = LatentIndex(DIM)
    index.add(latents[:5], ids[:5])
    dist, found = index.search(queries, k=8)
    assert (found[:, 5:] == -1).all() and np.isinf(dist[:, 5:]).all()
    assert sorted(found[0, :5]) == sorted(ids[:5])
    empty_d, empty_i = LatentIndex(DIM).search(queries, k=3)
    assert (empty_i == -1).all() and np.isinf(empty_d).all()


def test_remove_and_vectors_of(tied_data):
    latents, ids, queries = tied_data
    index = LatentIndex(DIM)
    index.add(latents, ids)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, [123_456_789]])) == len(gone)  # unknown ids ignored
    keep = ~np.isin(ids, gone)
    want = brute_force(latents[keep], ids[keep], queries, 20)[1]
    np.testing.assert_array_equal(index.search(queries, k=20)[1], want)
    np.testing.assert_array_equal(index.vectors_of(ids[keep][[4, 0, 4]]), latents[keep][[4, 0, 4]])
    with pytest.raises(LatentError, match=str(gone[0])):
        index.vectors_of(gone[:1])


def test_serialization_round_trip(tied_data):
    latents, ids, queries = tied_data
    index = LatentIndex(DIM)
    index.add(latents, ids)
    again = LatentIndex.from_bytes(index.to_bytes())
    assert again.ntotal == index.ntotal and again.dim == DIM and not again.is_hnsw
    for a, b in zip(index.search(queries, k=9), again.search(queries, k=9)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "data",
    [b"", b"not a faiss index at all", "truncated", faiss.serialize_index(faiss.IndexFlatL2(DIM)).tobytes()],
)
def test_corrupt_or_foreign_bytes_are_refused(tied_data, data):
    if data == "truncated":
        index = LatentIndex(DIM)
        index.add(*tied_data[:2])
        data = index.to_bytes()[:-100]
    with pytest.raises(LatentError):
        LatentIndex.from_bytes(data)


@pytest.mark.parametrize(
    "latents, ids, message",
    [
        (np.zeros((2, DIM)), np.arange(2), "float32"),
        (np.zeros((2, DIM + 1), np.float32), np.arange(2), "shape"),
        (np.zeros((2, DIM), np.float32), np.arange(2, dtype=np.int32), "int64"),
        (np.zeros((2, DIM), np.float32), np.array([4, 4]), "unique"),
        (np.zeros((2, DIM), np.float32), np.array([-1, 4]), ">= 0"),
        (np.full((2, DIM), np.nan, np.float32), np.arange(2), "NaN"),
        (np.zeros((2, DIM), np.float32), np.arange(3), "3 ids for 2"),
    ],
)
def test_wrong_inputs_are_refused(latents, ids, message):
    with pytest.raises(LatentError, match=message):
        LatentIndex(DIM).add(latents, ids)


def test_duplicate_id_across_adds_is_refused():
    index = LatentIndex(DIM)
    index.add(np.zeros((2, DIM), np.float32), np.array([1, 2]))
    with pytest.raises(LatentError, match="already"):
        index.add(np.zeros((1, DIM), np.float32), np.array([2]))


def test_hnsw_above_threshold_has_high_recall_and_survives_removal():
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((3000, 16)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64) * 7
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    index = LatentIndex(16, hnsw_threshold=1000)
    index.add(latents[:600], ids[:600])
    assert not index.is_hnsw
    index.add(latents[600:], ids[600:])  # crosses the threshold: becomes HNSW
    assert index.is_hnsw and index.ntotal == 3000

    def recall(index, keep):
        _, found = index.search(queries, k=10)
        _, truth = brute_force(latents[keep], ids[keep], queries, 10)
        return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])

    everything = np.ones(3000, bool)
    assert recall(index, everything) >= 0.95
    again = LatentIndex.from_bytes(index.to_bytes(), hnsw_threshold=1000)
    assert again.is_hnsw and recall(again, everything) >= 0.95
    index.remove(ids[:1500])  # HNSW cannot drop nodes: rebuilt, still above the threshold
    keep = np.arange(3000) >= 1500
    assert index.is_hnsw and index.ntotal == 1500 and recall(index, keep) >= 0.95
    index.remove(ids[1500:2500])  # below the threshold: exact flat again
    assert not index.is_hnsw
    assert recall(index, np.arange(3000) >= 2500) == 1.0
