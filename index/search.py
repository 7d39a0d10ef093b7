"""The one search path: query modes, the hybrid re-rank, radius search, "the item itself first" and
tie handling, over any ReadView (a store generation, or arrays in memory). The CLI, the server and
the bench all answer through search(), so the bench measures what users get.

Modes (distances: Hamming bits as int, or squared L2 between VAE means as float):

    hamming  the k nearest codes by Hamming distance, ties ordered as `ties` says (below).
    latent   the k nearest VAE means by squared L2 (the backend's latent k-NN).
    hybrid   the shortlist re-ranked by exact latent distance (ties by id). The shortlist is the
             hamming mode's answer at depth max(k, HYBRID_SHORTLIST): the nearest codes, at the
             cut the tied group ordered as `ties` says. It is the same for every k up to
             HYBRID_SHORTLIST (the server's largest k), so a smaller k's answer is the head of a
             larger one's: the page's k changes nothing but the length, and the bench's recall@10,
             R10@100 and mAP@1000 all measure the one ranking users get the head of. Its cost:
             ~1.4 ms a query on 70,000 items (the shortlist's latents are read and compared),
             against ~0.3 ms for a hamming query (one thread; candidates stay numpy columns,
             Neighbours, until the answer is read).

A radius (hamming mode only) answers every item within that many bit flips, ordered as hamming
mode orders them, cut to k when k is given.

Ties. Many items can share a Hamming distance (on a small collection many share a whole code),
and the backend orders them by id, which says nothing about similarity. With ties="latent" (the
default) items at equal Hamming distance are ordered by latent distance, then id: an image queried
with its own file, or a re-encoded or resized copy, comes first among the items that share its code.
To pick the right k, the whole tied group at the k-th distance is ordered: every item within that
distance (a Hamming range search), at most MAX_CANDIDATES of them (past that bound the group is cut
by id). ties="id" keeps the backend's (distance, id) order. Latent distances are floats, exactly
equal only for identical latents: those ties go by id.

Id queries ("itself"): the indexed item comes first, at distance 0, even when other items share
its code and latent exactly (copies of one file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hashae.errors import HashaeError
from hashae.index.backends.base import Hit, Neighbours, ReadView, Results, StoreError

QUERY_MODES = ("hamming", "latent", "hybrid")
TIE_ORDERS = ("latent", "id")
DEFAULT_K = 10
HYBRID_SHORTLIST = 1000  # the hamming answer re-ranked by latent distance, at least (mAP@1000's depth)
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
    Returns one Neighbours per query, best first (ids and distances; a sequence of Hit when read
    as one; with_metadata adds paths and labels).
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
        shortlists = _hamming(view, codes, latents, k=max(k, HYBRID_SHORTLIST), ties=ties)
        results = [_by_latent(view, ranked, latent, k) for ranked, latent in zip(shortlists, latents)]
    elif radius is not None:
        results = [ranked.hits() for ranked in _ordered(view, _columns(view.range_hamming(codes, radius=radius)), latents, k=k, ties=ties)]
    else:
        results = [ranked.hits() for ranked in _hamming(view, codes, latents, k=k, ties=ties)]
    if itself is not None:
        results = [_itself_first(hits, item, mode) if item is not None else hits for hits, item in zip(results, itself)]
    return [hits[:k] if k else hits for hits in results]


def with_metadata(view: ReadView, results: Results) -> list[list[Hit]]:
    """The same hits as Hit objects with path and label filled in from the view's item metadata."""
    ids = {hit.id for hits in results for hit in hits}
    items = view.items(ids)
    if len(items) != len(ids):
        raise StoreError(f"generation {view.gen} is no longer readable (purged by newer commits); search again")
    return [[replace(hit, path=items[hit.id].path, label=items[hit.id].label) for hit in hits] for hits in results]


# ------------------------------------------------------------------------------------ internals
@dataclass
class _Ranked:
    """One query's candidates as columns, in rank order: ids, Hamming distances and (once
    computed) latent distances."""

    ids: np.ndarray  # int64 (n,)
    hamming: np.ndarray  # int64 (n,)
    latent: np.ndarray | None = None  # float32 (n,)

    def take(self, order: np.ndarray) -> _Ranked:
        return _Ranked(self.ids[order], self.hamming[order], None if self.latent is None else self.latent[order])

    def hits(self) -> Neighbours:
        return Neighbours(self.ids, self.hamming)


def _columns(results: Results) -> list[_Ranked]:
    return [_Ranked(found.ids, found.distances.astype(np.int64)) for found in results]


def _hamming(view: ReadView, codes: np.ndarray, latents: np.ndarray, *, k: int, ties: str) -> list[_Ranked]:
    """The hamming mode's answer: the k nearest codes, ties ordered as asked."""
    if ties == "id":
        return _columns(view.search_hamming(codes, k=k))
    return _ordered(view, _through_kth_distance(view, codes, depth=k), latents, k=k, ties=ties)


def _through_kth_distance(view: ReadView, codes: np.ndarray, *, depth: int) -> list[_Ranked]:
    """Each query's Hamming top `depth`, plus every item tied with the last of them (at most
    max(depth, MAX_CANDIDATES) items in all), sorted by (distance, id)."""
    results = view.search_hamming(codes, k=depth + 1)  # one more says whether a tie crosses the cut
    ranked = []
    for q, found in enumerate(results):
        distances = found.distances
        if len(found) > depth and distances[depth] == distances[depth - 1]:
            found = view.range_hamming(codes[q : q + 1], radius=int(distances[depth - 1]))[0]
            found = found[: max(depth, MAX_CANDIDATES)]
        else:
            found = found[:depth]
        ranked.extend(_columns([found]))
    return ranked


def _ordered(view: ReadView, candidates: list[_Ranked], latents: np.ndarray, *, k: int | None, ties: str) -> list[_Ranked]:
    """Candidates sorted by (Hamming distance, id), re-ordered within equal distance by latent
    distance when ties == "latent" and cut to k. Only candidates up to the k-th distance can move
    into the first k, so only their latents are read."""
    ordered = []
    for ranked, latent in zip(candidates, latents):
        if k is not None and len(ranked.ids) > k:
            ranked = ranked.take(np.flatnonzero(ranked.hamming <= ranked.hamming[k - 1]))
        if ties == "latent":
            ranked = _Ranked(ranked.ids, ranked.hamming, _latent_distances(view, ranked.ids, latent))
            ranked = ranked.take(np.lexsort((ranked.ids, ranked.latent, ranked.hamming)))
        ordered.append(ranked.take(slice(0, k)))
    return ordered


def _by_latent(view: ReadView, ranked: _Ranked, latent: np.ndarray, k: int) -> Neighbours:
    """A shortlist re-ranked by latent distance, ties by id: the hybrid answer."""
    distances = ranked.latent if ranked.latent is not None else _latent_distances(view, ranked.ids, latent)
    order = np.lexsort((ranked.ids, distances))[:k]
    return Neighbours(ranked.ids[order], distances[order])


def _latent_distances(view: ReadView, ids: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Squared L2 float32 (n,) from one query latent to the stored latents of ids."""
    if not len(ids):
        return np.empty(0, np.float32)
    return ((view.latents_of(ids) - latent) ** 2).sum(axis=1, dtype=np.float32)


def _itself_first(found: Neighbours, item: int, mode: str) -> Neighbours:
    dtype = np.int64 if mode == "hamming" else np.float32
    others = found.ids != item
    return Neighbours(np.concatenate([[item], found.ids[others]]), np.concatenate([np.zeros(1, dtype), found.distances[others].astype(dtype)]))


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
