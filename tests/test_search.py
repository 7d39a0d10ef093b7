"""index/search.py against brute force on arrays with many tied codes (ArrayView): the three modes,
the tie orders, the hybrid shortlist rule, radius search, the item itself first, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from hashae.index import search as search_module
from hashae.index.array_view import ArrayView
from hashae.index.backends.base import Hit, Neighbours
from hashae.index.search import QueryError, search, with_metadata

N, BITS, DIM = 400, 16, 8


@pytest.fixture(scope="module")
def arrays():
    """Codes drawn from 40 distinct codes (so every code is shared by ~10 items), latents, and
    ids that are not in the order of the rows (ties by id must not follow rows)."""
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, (40, BITS // 8), dtype=np.uint8)
    codes = distinct[rng.integers(0, 40, N)]
    latents = rng.normal(size=(N, DIM)).astype(np.float32)
    ids = rng.permutation(np.arange(1000, 1000 + 3 * N, 3))[:N].astype(np.int64)
    return codes, latents, ids


@pytest.fixture(scope="module")
def view(arrays):
    codes, latents, ids = arrays
    return ArrayView(codes, latents, ids=ids, paths=[f"p{i}.png" for i in ids], labels=["a" if i % 2 else "b" for i in ids])


def hamming(codes, code):
    return np.unpackbits(codes ^ code, axis=1).sum(axis=1)


def squared_l2(latents, latent):
    return ((latents - latent) ** 2).sum(axis=1, dtype=np.float32)


def pairs(hits):
    return [(hit.id, hit.distance) for hit in hits]


def queries(arrays, rows):
    """Query codes and latents near those of some rows (a latent nudged, so it is not an item's)."""
    codes, latents, _ = arrays
    rng = np.random.default_rng(1)
    return codes[rows], latents[rows] + rng.normal(scale=0.3, size=(len(rows), DIM)).astype(np.float32)


ROWS = [0, 5, 17, 123, 399]


# ---------------------------------------------------------------------------------- the view
def test_array_view_matches_brute_force(arrays, view):
    codes, latents, ids = arrays
    q_codes, q_latents = queries(arrays, ROWS)
    for code, latent, got in zip(q_codes, q_latents, view.search_hamming(q_codes, k=25)):
        d = hamming(codes, code)
        order = np.lexsort((ids, d))[:25]
        assert pairs(got) == list(zip(ids[order].tolist(), d[order].tolist()))
    for code, got in zip(q_codes, view.range_hamming(q_codes, radius=3)):
        d = hamming(codes, code)
        order = np.lexsort((ids, d))
        order = order[d[order] <= 3]
        assert pairs(got) == list(zip(ids[order].tolist(), d[order].tolist()))
    for latent, got in zip(q_latents, view.search_latent(q_latents, k=7)):
        d = squared_l2(latents, latent)
        assert [h.id for h in got] == ids[np.lexsort((ids, d))[:7]].tolist()
    assert (view.codes_of(ids[[3, 1]]) == codes[[3, 1]]).all()
    assert (view.latents_of(ids[[2]]) == latents[[2]]).all()
    assert view.item_ids().tolist() == sorted(ids.tolist())
    assert view.items([int(ids[0]), 5])[int(ids[0])].path == f"p{ids[0]}.png" and 5 not in view.items([5])


# ------------------------------------------------------------------------------------- modes
def test_hamming_with_id_ties_is_the_backend_order(arrays, view):
    codes, _, ids = arrays
    q_codes, q_latents = queries(arrays, ROWS)
    results = search(view, codes=q_codes, latents=q_latents, k=12, ties="id")
    for code, got in zip(q_codes, results):
        d = hamming(codes, code)
        order = np.lexsort((ids, d))[:12]
        assert pairs(got) == list(zip(ids[order].tolist(), d[order].tolist()))


@pytest.mark.parametrize("k", [1, 3, 12, 60, N + 5])
def test_hamming_ties_go_by_latent_distance_over_the_whole_tied_group(arrays, view, k):
    codes, latents, ids = arrays
    q_codes, q_latents = queries(arrays, ROWS)
    results = search(view, codes=q_codes, latents=q_latents, k=k)  # ties="latent" is the default
    for code, latent, got in zip(q_codes, q_latents, results):
        d = hamming(codes, code)
        order = np.lexsort((ids, squared_l2(latents, latent), d))[:k]
        assert pairs(got) == list(zip(ids[order].tolist(), d[order].tolist()))
        assert all(isinstance(hit.distance, int) for hit in got)


def test_latent_mode_is_the_latent_knn(arrays, view):
    _, latents, ids = arrays
    q_codes, q_latents = queries(arrays, ROWS)
    for latent, got in zip(q_latents, search(view, codes=q_codes, latents=q_latents, mode="latent", k=9)):
        d = squared_l2(latents, latent)
        order = np.lexsort((ids, d))[:9]
        assert [h.id for h in got] == ids[order].tolist()
        np.testing.assert_allclose([h.distance for h in got], d[order], rtol=1e-5)


@pytest.mark.parametrize("ties", ["latent", "id"])
@pytest.mark.parametrize("shortlist", [30, 100])
def test_hybrid_reranks_the_hamming_answer_at_the_shortlist_depth(arrays, view, monkeypatch, shortlist, ties):
    codes, latents, ids = arrays
    monkeypatch.setattr(search_module, "HYBRID_SHORTLIST", shortlist)
    q_codes, q_latents = queries(arrays, ROWS)
    for k in (5, shortlist, shortlist + 40):
        results = search(view, codes=q_codes, latents=q_latents, mode="hybrid", k=k, ties=ties)
        for code, latent, got in zip(q_codes, q_latents, results):
            d, dl = hamming(codes, code), squared_l2(latents, latent)
            keys = (ids, dl, d) if ties == "latent" else (ids, d)
            short = np.lexsort(keys)[: max(k, shortlist)]  # the hamming mode's answer at that depth
            order = short[np.lexsort((ids[short], dl[short]))][:k]
            assert [h.id for h in got] == ids[order].tolist()
            np.testing.assert_allclose([h.distance for h in got], dl[order], rtol=1e-5)
            assert all(type(h.distance) is float for h in got)


def test_hybrid_answers_are_heads_of_each_other(arrays, view, monkeypatch):
    monkeypatch.setattr(search_module, "HYBRID_SHORTLIST", 60)  # a shortlist smaller than the view
    q_codes, q_latents = queries(arrays, ROWS)
    longest = search(view, codes=q_codes, latents=q_latents, mode="hybrid", k=60)
    for k in (1, 10, 50):
        shorter = search(view, codes=q_codes, latents=q_latents, mode="hybrid", k=k)
        assert [hits for hits in shorter] == [hits[:k] for hits in longest]


def test_the_tied_group_is_bounded(arrays, view, monkeypatch):
    codes, latents, ids = arrays
    monkeypatch.setattr(search_module, "MAX_CANDIDATES", 20)
    q_codes, q_latents = queries(arrays, ROWS)
    for code, latent, got in zip(q_codes, q_latents, search(view, codes=q_codes, latents=q_latents, k=15)):
        d = hamming(codes, code)
        candidates = np.lexsort((ids, d))[:20]  # beyond the bound, the group is cut by id
        order = candidates[np.lexsort((ids[candidates], squared_l2(latents[candidates], latent), d[candidates]))][:15]
        assert [h.id for h in got] == ids[order].tolist()


# ------------------------------------------------------------------------------------ radius
@pytest.mark.parametrize("ties", ["latent", "id"])
@pytest.mark.parametrize("k", [None, 4])
def test_radius_answers_every_item_within_it_in_mode_order(arrays, view, ties, k):
    codes, latents, ids = arrays
    q_codes, q_latents = queries(arrays, ROWS)
    results = search(view, codes=q_codes, latents=q_latents, radius=4, k=k, ties=ties)
    for code, latent, got in zip(q_codes, q_latents, results):
        d = hamming(codes, code)
        keys = (ids, squared_l2(latents, latent), d) if ties == "latent" else (ids, d)
        order = np.lexsort(keys)
        order = order[d[order] <= 4][:k]
        assert pairs(got) == list(zip(ids[order].tolist(), d[order].tolist()))


# ---------------------------------------------------------------------------------- itself
@pytest.mark.parametrize("mode", ["hamming", "latent", "hybrid"])
def test_an_item_comes_first_among_exact_copies(arrays, mode):
    codes, latents, ids = arrays
    copies = np.repeat(codes[:1], 6, axis=0), np.repeat(latents[:1], 6, axis=0)  # six identical items
    view = ArrayView(np.concatenate([codes, copies[0]]), np.concatenate([latents, copies[1]]), ids=np.concatenate([ids, np.arange(6) + 5000]))
    for item in (int(ids[0]), 5005):  # the smallest and the largest id of the group... and a copy
        for radius in ((None, 0) if mode == "hamming" else (None,)):
            got = search(view, codes=view.codes_of([item]), latents=view.latents_of([item]), mode=mode, k=3, radius=radius, itself=[item])[0]
            assert got[0].id == item and got[0].distance == 0 and len(got) == 3
            assert type(got[0].distance) is (int if mode == "hamming" else float)
            assert item not in [hit.id for hit in got[1:]]


def test_own_latent_puts_an_image_first_among_its_code(arrays, view):
    codes, latents, ids = arrays
    for row in ROWS:  # a query that is an item's code and (almost) its latent: that item first
        shared = (hamming(codes, codes[row]) == 0).sum()
        got = search(view, codes=codes[[row]], latents=latents[[row]] + 1e-4, k=1)[0]
        assert shared > 1 and got[0].id == int(ids[row])
        assert search(view, codes=codes[[row]], latents=latents[[row]], k=1, ties="id")[0][0].id == int(ids[hamming(codes, codes[row]) == 0].min())


# ---------------------------------------------------------------------------------- metadata
def test_with_metadata_fills_paths_and_labels(arrays, view):
    q_codes, q_latents = queries(arrays, ROWS[:2])
    results = with_metadata(view, search(view, codes=q_codes, latents=q_latents, k=3))
    assert all(hit.path == f"p{hit.id}.png" and hit.label in ("a", "b") for hits in results for hit in hits)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"mode": "cosine"}, "unknown mode 'cosine'"),
        ({"ties": "random"}, "tie order"),
        ({"k": 0}, "k must be a positive integer"),
        ({"k": 2.5}, "k must be"),
        ({"radius": -1}, "radius must be between 0 and 16"),
        ({"radius": 17}, "radius must be between 0 and 16"),
        ({"radius": 1, "mode": "latent"}, "--mode hamming"),
        ({"radius": 1, "mode": "hybrid"}, "--mode hamming"),
    ],
)
def test_bad_arguments_are_query_errors(arrays, view, arguments, words):
    q_codes, q_latents = queries(arrays, ROWS[:1])
    with pytest.raises(QueryError, match=words):
        search(view, codes=q_codes, latents=q_latents, **arguments)


def test_unmatched_query_arrays(arrays, view):
    q_codes, q_latents = queries(arrays, ROWS[:2])
    with pytest.raises(QueryError, match="2 codes but 1 latents"):
        search(view, codes=q_codes, latents=q_latents[:1])
    with pytest.raises(QueryError, match="itself"):
        search(view, codes=q_codes, latents=q_latents, itself=[None])


def test_neighbours_are_columns_read_as_hits():
    """A backend answer: numpy columns for the search module, Hit objects (int or float distances)
    for whoever reads it as a sequence; slices stay columns."""
    hamming = Neighbours(np.array([4, 2, 9]), np.array([0, 1, 1], np.int64))
    assert list(hamming) == [Hit(4, 0), Hit(2, 1), Hit(9, 1)] and hamming == [Hit(4, 0), Hit(2, 1), Hit(9, 1)]
    assert type(hamming[0].distance) is int and len(hamming) == 3 and hamming[-1] == Hit(9, 1)
    assert isinstance(hamming[1:], Neighbours) and hamming[1:] == Neighbours([2, 9], [1, 1]) and hamming[1:] != hamming
    latent = Neighbours.of_pairs([(0.5, 7), (1.25, 3)], dtype=np.float32)
    assert type(latent[0].distance) is float and list(latent) == [Hit(7, 0.5), Hit(3, 1.25)]
    with pytest.raises(ValueError, match="2 ids but 1 distances"):
        Neighbours([1, 2], [0])
