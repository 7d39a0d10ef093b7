"""The one search path: query modes, the hybrid re-rank, radius search, "the item itself first" and
tie handling, over any ReadView (a store generation, or arrays in memory). The CLI, the server and
the bench all answer through search(), so the bench measures what users get.

Modes (distances: Hamming bits as int, or squared L2 between VAE means as float):

    hamming  the k nearest codes by Hamming distance.
    latent   the k nearest VAE means by squared L2 (the backend's latent k-NN).
    hybrid   a Hamming shortlist re-ranked by exact latent distance. The shortlist is the Hamming
             top max(k, HYBRID_SHORTLIST) plus every item tied with its last one (see below). It does
             not depend on k up to HYBRID_SHORTLIST, so the answer for a smaller k is the head of
             the answer for a larger one, and the bench's mAP@1000 measures the very ranking a
             user's `--mode hybrid -k 10` query is the head of.

A radius (hamming mode only) answers every item within that many bit flips, ordered as hamming
mode orders them, cut to k when k is given.

Ties. Many items can share a Hamming distance (on a small collection many share a whole code),
and the backend orders them by id, which says nothing about similarity. With ties="latent" (the
default) items at equal Hamming distance are ordered by latent distance, then id: an image queried
with its own file, or a re-encoded or resized copy, comes first among the items that share its code.
For that to pick the right k items, the candidates hold the whole tied group at the k-th distance:
every item within that distance (a Hamming range search), at most MAX_CANDIDATES of them (past
that bound the group is cut by id). ties="id" keeps the backend's (distance, id) order. Latent and
hybrid distances are floats, exactly equal only for identical latents: those ties go by id.

Id queries ("itself"): the indexed item comes first, at distance 0, even when other items share
its code and latent exactly (copies of one file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from hashae.errors import HashaeError
from hashae.index.backends.base import Hit, ReadView, Results, StoreError

QUERY_MODES = ("hamming", "latent", "hybrid")
TIE_ORDERS = ("latent", "id")
DEFAULT_K = 10
HYBRID_SHORTLIST = 1000  # the Hamming top re-ranked by latent distance (the depth mAP@1000 looks at)
MAX_CANDIDATES = 10_000  # at most this many items of a tied group are re-ordered by latent distance


class QueryError(HashaeError):
    """A search was asked with bad arguments: mode, k, radius, ties, or unmatched query arrays."""


def check_query(*, mode: str, k: int | None, radius: int | None, ties: str, bits: int | None = None) -> None:
    """Refuse a bad combination of search arguments with a one-line QueryError saying what to use."""
    if mode not in QUERY_MODES:
        raise QueryError(f"unknown mode {mode!r}; use one of {', '.join(QUERY_MODES)}")
    if ties not in TIE_ORDERS:
        raise QueryError(f"unknown tie order {ties!r}; use one of {', '.join(TIE_ORDERS)}")
    if k is not None and not _is_int(k, minimum=1):
        raise QueryError(f"k must be a positive integer, got {k!r}")
    if radius is None:
        return
    if mode != "hamming":
        raise QueryError("--radius is a Hamming-ball search: use it with --mode hamming")
    if not _is_int(radius, minimum=0) or (bits is not None and radius > bits):
        limit = f"between 0 and {bits}" if bits is not None else "a non-negative integer"
        raise QueryError(f"radius must be {limit}, got {radius!r}")


def search(
    view: ReadView,
    *,
    codes: np.ndarray,
    latents: np.ndarray,
    mode: str = "hamming",
    k: int | None = None,
    radius: int | None = None,
    ties: str = "latent",
    itself: Sequence[int | None] | None = None,
) -> Results:
    """Answer queries given as packed codes uint8 (nq, bits/8) and latents float32 (nq, d).

    k: results per query (default DEFAULT_K; with a radius, None means every item within it).
    itself: per query, the id of the indexed item the query is (None for an image), put first.
    Returns one list of Hit per query, best first (id and distance; see with_metadata).
    """
    check_query(mode=mode, k=k, radius=radius, ties=ties, bits=view.settings.bits)
    codes, latents = np.asarray(codes), np.asarray(latents, dtype=np.float32)
    if len(codes) != len(latents):
        raise QueryError(f"got {len(codes)} codes but {len(latents)} latents; give one of each per query")
    if itself is not None and len(itself) != len(codes):
        raise QueryError(f"got {len(codes)} queries but {len(itself)} entries of `itself`")
    if radius is None:
        k = k or DEFAULT_K
    if mode == "latent":
        results = view.search_latent(latents, k=k)
    elif mode == "hybrid":
        results = _hybrid(view, codes, latents, k=k)
    elif radius is not None:
        results = _ordered_ties(view, view.range_hamming(codes, radius=radius), latents, k=k, ties=ties)
    elif ties == "id":
        results = view.search_hamming(codes, k=k)
    else:
        results = _ordered_ties(view, _through_kth_distance(view, codes, depth=k), latents, k=k, ties=ties)
    if itself is not None:
        results = [_itself_first(hits, item, mode) if item is not None else hits for hits, item in zip(results, itself)]
    return [hits[:k] if k else hits for hits in results]


def with_metadata(view: ReadView, results: Results) -> Results:
    """The same hits with path and label filled in from the view's item metadata."""
    ids = {hit.id for hits in results for hit in hits}
    items = view.items(ids)
    if len(items) != len(ids):
        raise StoreError(f"generation {view.gen} is no longer readable (purged by newer commits); search again")
    return [[replace(hit, path=items[hit.id].path, label=items[hit.id].label) for hit in hits] for hits in results]


# ------------------------------------------------------------------------------------ internals
def _through_kth_distance(view: ReadView, codes: np.ndarray, *, depth: int) -> Results:
    """Each query's Hamming top `depth`, plus every item tied with the last of them (at most
    max(depth, MAX_CANDIDATES) items in all), sorted by (distance, id)."""
    results = view.search_hamming(codes, k=depth + 1)  # one more says whether a tie crosses the cut
    crossing = [q for q, hits in enumerate(results) if len(hits) > depth and hits[depth].distance == hits[depth - 1].distance]
    results = [hits[:depth] for hits in results]
    for q in crossing:  # one range search per query: each has its own radius
        group = view.range_hamming(codes[q : q + 1], radius=int(results[q][-1].distance))[0]
        results[q] = group[: max(depth, MAX_CANDIDATES)]
    return results


def _ordered_ties(view: ReadView, results: Results, latents: np.ndarray, *, k: int | None, ties: str) -> Results:
    """Hamming hits sorted by (distance, id), re-ordered within equal distance by latent distance
    when ties == "latent". Only hits up to the k-th distance can move into the first k."""
    if ties == "id":
        return results
    ordered = []
    for hits, latent in zip(results, latents):
        if k is not None and len(hits) > k:
            last = hits[k - 1].distance
            hits = [hit for hit in hits if hit.distance <= last]
        ids, hamming = _ids(hits), np.array([hit.distance for hit in hits], dtype=np.int64)
        order = np.lexsort((ids, _latent_distances(view, ids, latent), hamming))
        ordered.append([hits[i] for i in order])
    return ordered


def _hybrid(view: ReadView, codes: np.ndarray, latents: np.ndarray, *, k: int) -> Results:
    """The Hamming shortlist of each query re-ranked by exact latent distance, ties by id."""
    shortlists = _through_kth_distance(view, codes, depth=max(k, HYBRID_SHORTLIST))
    ranked = []
    for hits, latent in zip(shortlists, latents):
        ids = _ids(hits)
        distances = _latent_distances(view, ids, latent)
        order = np.lexsort((ids, distances))[:k]
        ranked.append([Hit(int(ids[i]), float(distances[i])) for i in order])
    return ranked


def _latent_distances(view: ReadView, ids: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Squared L2 float32 (n,) from one query latent to the stored latents of ids."""
    if not len(ids):
        return np.empty(0, np.float32)
    return ((view.latents_of(ids) - latent) ** 2).sum(axis=1, dtype=np.float32)


def _itself_first(hits: list[Hit], item: int, mode: str) -> list[Hit]:
    zero = 0 if mode == "hamming" else 0.0
    return [Hit(int(item), zero), *(hit for hit in hits if hit.id != item)]


def _ids(hits: list[Hit]) -> np.ndarray:
    return np.array([hit.id for hit in hits], dtype=np.int64)


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
