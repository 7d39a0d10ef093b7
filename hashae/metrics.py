"""Retrieval metrics of the benchmark protocol (/work/shared/BENCHMARK.md), vectorised, chunked over queries.

Conventions, fixed here once:

- Rankings order the database by (distance, database index): ties go to the item stored first,
  which does not depend on labels, so no method gains from lucky tie-breaking.
- AP@k, the standard learning-to-hash convention:
      AP@k = sum_{i <= k} P(i) rel(i) / R_k
  where P(i) is the precision of the top i items, rel(i) is 1 when item i is relevant and R_k is the
  number of relevant items in the top k. A query with no relevant item in its top k scores 0.
  mAP@k is the mean over queries; k=None means the whole ranking (R = every relevant item).
- Relevant = same class label.
- Precision within Hamming radius r (hash look-up semantics): every database item at distance <= r;
  an empty ball scores precision 0 and counts towards the empty-ball share.
- Neighbour recall (as ann-benchmarks): the exact Euclidean k-NN in the original space (pixels) is
  the truth; a candidate is found when its true distance is at most the k-th true distance plus
  1e-6, so items tied with the k-th neighbour count. recall = min(found, k) / k, averaged over
  queries: recall@10 looks at a method's top 10, R10@100 at its top 100.

Memory: distances and rankings exist for one chunk of queries at a time, sized to stay under
MEMORY_BUDGET_BYTES, so 10,000 queries against 60,000 items run in a few hundred MiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hashae.codes import check_codes, hamming_distances
from hashae.errors import ConfigError, DataError

MEMORY_BUDGET_BYTES = 256 * 2**20
RECALL_TOLERANCE = 1e-6
MAP_DEPTH = 1000  # mAP@1000
BALL_RADIUS = 2  # P@r<=2
RECALL_K = 10  # the true top 10
RECALL_DEPTH = 100  # R10@100

# rough bytes of temporaries per (query, database item) pair while a chunk is ranked and scored
_BYTES_PER_PAIR = 64


# ----------------------------------------------------------------------------- input checks


def _check_depth(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"{what} labels must be 1-D with one label per item ({n}), got shape {labels.shape}")
    return labels


def _check_code_pair(query_codes: np.ndarray, db_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    query_codes = check_codes(query_codes)
    db_codes = check_codes(db_codes, nbits=query_codes.shape[1] * 8)
    if db_codes.shape[0] == 0:
        raise DataError("the database is empty: encode at least one item before evaluating")
    return query_codes, db_codes


def _check_vector_pair(queries: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    queries, db = np.asarray(queries), np.asarray(db)
    for name, x in (("queries", queries), ("database", db)):
        if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{name} must be a 2-D real array (n, d), got {x.dtype} of shape {x.shape}")
    if queries.shape[1] != db.shape[1]:
        raise DataError(f"queries have {queries.shape[1]} dimensions, the database {db.shape[1]}")
    if db.shape[0] == 0:
        raise DataError("the database is empty: add at least one vector before evaluating")
    return queries, db


def _check_relevance(relevant: np.ndarray) -> np.ndarray:
    relevant = np.asarray(relevant)
    if relevant.ndim != 2:
        raise DataError(f"relevance flags must be 2-D (n_queries, n_ranked), got shape {relevant.shape}")
    if relevant.dtype != np.bool_:
        if not np.isin(relevant, (0, 1)).all():
            raise DataError("relevance flags must be boolean or contain only 0 and 1")
        relevant = relevant.astype(bool)
    return relevant


# ----------------------------------------------------------------------------- chunking


def _query_chunks(n_queries: int, bytes_per_query: int, chunk_size: int | None) -> Iterator[slice]:
    """Consecutive slices of the queries, each small enough for the memory budget (or chunk_size)."""
    if chunk_size is None:
        chunk_size = max(1, MEMORY_BUDGET_BYTES // max(1, bytes_per_query))
    chunk_size = _check_depth("chunk_size", chunk_size)
    for start in range(0, n_queries, chunk_size):
        yield slice(start, min(start + chunk_size, n_queries))


def _hamming_distance_chunks(
    query_codes: np.ndarray, db_codes: np.ndarray, chunk_size: int | None
) -> Iterator[tuple[slice, np.ndarray]]:
    """(query slice, Hamming distances (chunk, n_db) int32) for every chunk of queries."""
    n_db, nbytes = db_codes.shape
    for rows in _query_chunks(len(query_codes), n_db * (2 * nbytes + _BYTES_PER_PAIR), chunk_size):
        yield rows, hamming_distances(query_codes[rows], db_codes)


def _l2_rank_key_chunks(
    queries: np.ndarray, db: np.ndarray, chunk_size: int | None
) -> Iterator[tuple[slice, np.ndarray]]:
    """(query slice, ||x||^2 - 2 q.x (chunk, n_db) float64) per chunk: the squared L2 distance less ||q||^2.

    Adding the per-query constant ||q||^2 would not change the ranking, only add rounding.
    Computed in float64 so near-ties are ranked as exact distances would rank them.
    """
    db64 = np.asarray(db, dtype=np.float64)
    db_sq_norms = np.einsum("ij,ij->i", db64, db64)
    for rows in _query_chunks(len(queries), len(db64) * _BYTES_PER_PAIR, chunk_size):
        q64 = np.asarray(queries[rows], dtype=np.float64)
        yield rows, db_sq_norms[None, :] - 2.0 * (q64 @ db64.T)


# ----------------------------------------------------------------------------- rankings


def _rank_hamming(dists: np.ndarray, nbits: int) -> np.ndarray:
    """Full ranking of each row by (distance, index); small unsigned ints let numpy use radix sort."""
    small = dists.astype(np.uint8 if nbits < 256 else np.uint16)
    return np.argsort(small, axis=1, kind="stable")


def _stable_smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """The first k columns of a stable argsort of each row, without sorting whole rows when it can.

    argpartition finds k candidates; when every item tied with the k-th key is among them, sorting
    the candidates (taken in index order) stably by key gives the exact (key, index) order. Rows
    with ties across the cut fall back to a full stable sort.
    """
    n = keys.shape[1]
    if k >= n:
        return np.argsort(keys, axis=1, kind="stable")
    candidates = np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
    candidate_keys = np.take_along_axis(keys, candidates, axis=1)
    top = np.take_along_axis(candidates, np.argsort(candidate_keys, axis=1, kind="stable"), axis=1)
    kth_key = np.take_along_axis(keys, top[:, -1:], axis=1)
    tied_everywhere = (keys == kth_key).sum(axis=1)
    tied_kept = (np.take_along_axis(keys, top, axis=1) == kth_key).sum(axis=1)
    cut_through_ties = tied_everywhere != tied_kept
    if cut_through_ties.any():
        top[cut_through_ties] = np.argsort(keys[cut_through_ties], axis=1, kind="stable")[:, :k]
    return top


def hamming_ranking(
    query_codes: np.ndarray, db_codes: np.ndarray, *, topk: int | None = None, chunk_size: int | None = None
) -> np.ndarray:
    """Database ids (nq, topk) int64 ranked by (Hamming distance, database index) for each query.

    query_codes, db_codes: canonical packed codes (see hashae.codes), same number of bits.
    topk: keep the first topk ids (None: the whole database).
    chunk_size: queries per chunk (default: sized to MEMORY_BUDGET_BYTES).
    """
    query_codes, db_codes = _check_code_pair(query_codes, db_codes)
    depth = min(_check_depth("topk", topk) or len(db_codes), len(db_codes))
    nbits = db_codes.shape[1] * 8
    ranking = np.empty((len(query_codes), depth), dtype=np.int64)
    for rows, dists in _hamming_distance_chunks(query_codes, db_codes, chunk_size):
        ranking[rows] = _rank_hamming(dists, nbits)[:, :depth]
    return ranking


def float_ranking(
    queries: np.ndarray, db: np.ndarray, *, topk: int | None = None, chunk_size: int | None = None
) -> np.ndarray:
    """Database ids (nq, topk) int64 ranked by (Euclidean distance, database index) for each query.

    Exhaustive, like a FAISS IndexFlatL2, but in float64 numpy (the database is copied to float64
    once, n * d * 8 bytes) so ties are broken by index and near-ties ranked as exact distances rank
    them. topk=None ranks the whole database.
    """
    queries, db = _check_vector_pair(queries, db)
    depth = min(_check_depth("topk", topk) or len(db), len(db))
    ranking = np.empty((len(queries), depth), dtype=np.int64)
    for rows, keys in _l2_rank_key_chunks(queries, db, chunk_size):
        ranking[rows] = _stable_smallest(keys, depth)
    return ranking


# ----------------------------------------------------------------------------- average precision


def average_precisions(relevant: np.ndarray, *, k: int | None = None) -> np.ndarray:
    """AP@k of every query (nq,) float64, from relevance flags (nq, n_ranked) in ranked order.

    AP@k = sum_{i <= k} P(i) rel(i) / R_k, R_k = relevant items in the top k; 0 when R_k = 0.
    k=None: the whole given ranking.
    """
    relevant = _check_relevance(relevant)[:, : _check_depth("k", k)]
    n_queries, depth = relevant.shape
    if depth == 0:
        return np.zeros(n_queries)
    hits = np.cumsum(relevant, axis=1, dtype=np.int64)
    precision_at_rank = hits / np.arange(1, depth + 1, dtype=np.float64)
    summed = np.where(relevant, precision_at_rank, 0.0).sum(axis=1)
    n_relevant = hits[:, -1]
    return np.divide(summed, n_relevant, out=np.zeros(n_queries), where=n_relevant > 0)


def average_precision(relevant: np.ndarray, *, k: int | None = None) -> float:
    """AP@k of one ranking given as 1-D relevance flags, e.g. [1, 0, 1, 0] -> (1 + 2/3) / 2."""
    relevant = np.asarray(relevant)
    if relevant.ndim != 1:
        raise DataError(f"one ranking's relevance flags must be 1-D, got shape {relevant.shape}")
    return float(average_precisions(relevant[None, :], k=k)[0])


def mean_average_precision(relevant: np.ndarray, *, k: int | None = None) -> float:
    """mAP@k: mean over queries of AP@k (see average_precisions); k=None for mAP over the whole ranking."""
    return float(average_precisions(relevant, k=k).mean())


# ----------------------------------------------------------------------------- Hamming balls


@dataclass(frozen=True, eq=False)
class PrecisionRecallCurve:
    """Hash look-up quality at every Hamming radius 0..nbits, averaged over queries.

    precision[r]: mean over queries of the precision of the ball of radius r (empty ball = 0).
    recall[r]: mean over queries of the share of the query's relevant items inside the ball.
    empty_share[r]: share of queries whose ball of radius r is empty.
    """

    radius: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    empty_share: np.ndarray


def _cumulative_ball_counts(
    dists: np.ndarray, same_class: np.ndarray, nbits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items and relevant items within each radius 0..nbits, per query: two (nq, nbits + 1) int64 arrays."""
    n_queries, width = dists.shape[0], nbits + 1
    flat = (dists + (np.arange(n_queries) * width)[:, None]).ravel()
    retrieved = np.bincount(flat, minlength=n_queries * width).reshape(n_queries, width)
    hits = np.bincount(flat[same_class.ravel()], minlength=n_queries * width).reshape(n_queries, width)
    return np.cumsum(retrieved, axis=1), np.cumsum(hits, axis=1)


def _ball_precisions(retrieved: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Per-query precision of a ball (empty ball = 0)."""
    return np.divide(hits, retrieved, out=np.zeros(hits.shape), where=retrieved > 0)


def _all_ball_counts(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    chunk_size: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative ball counts (retrieved, hits), each (nq, nbits + 1), over every query."""
    query_codes, db_codes = _check_code_pair(query_codes, db_codes)
    query_labels = _check_labels(query_labels, len(query_codes), "query")
    db_labels = _check_labels(db_labels, len(db_codes), "database")
    nbits = db_codes.shape[1] * 8
    retrieved = np.empty((len(query_codes), nbits + 1), dtype=np.int64)
    hits = np.empty_like(retrieved)
    for rows, dists in _hamming_distance_chunks(query_codes, db_codes, chunk_size):
        same_class = db_labels[None, :] == query_labels[rows, None]
        retrieved[rows], hits[rows] = _cumulative_ball_counts(dists, same_class, nbits)
    return retrieved, hits


def precision_within_radius(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    radius: int = BALL_RADIUS,
    chunk_size: int | None = None,
) -> tuple[float, float]:
    """(mean precision of the Hamming balls of radius r, share of queries whose ball is empty).

    The ball holds every database item at Hamming distance <= radius; an empty ball has precision 0.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ConfigError(f"radius must be a non-negative integer, got {radius!r}")
    retrieved, hits = _all_ball_counts(query_codes, db_codes, query_labels, db_labels, chunk_size)
    r = min(int(radius), retrieved.shape[1] - 1)
    precision = _ball_precisions(retrieved[:, r], hits[:, r])
    return float(precision.mean()), float((retrieved[:, r] == 0).mean())


def precision_recall_curve(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    chunk_size: int | None = None,
) -> PrecisionRecallCurve:
    """Precision, recall and empty-ball share of Hamming-ball look-up at every radius 0..nbits.

    Precision counts an empty ball as 0, as precision_within_radius does, so curve.precision[2] is P@r<=2.
    A query whose class has no database item has recall 0.
    """
    retrieved, hits = _all_ball_counts(query_codes, db_codes, query_labels, db_labels, chunk_size)
    n_relevant = hits[:, -1:]
    recall = np.divide(hits, n_relevant, out=np.zeros(hits.shape), where=n_relevant > 0)
    return PrecisionRecallCurve(
        radius=np.arange(retrieved.shape[1]),
        precision=_ball_precisions(retrieved, hits).mean(axis=0),
        recall=recall.mean(axis=0),
        empty_share=(retrieved == 0).mean(axis=0),
    )


# ----------------------------------------------------------------------------- neighbour recall


def recall_at(
    true_kth_dist: np.ndarray,
    candidate_true_dists: np.ndarray,
    *,
    k: int = RECALL_K,
    tolerance: float = RECALL_TOLERANCE,
) -> float:
    """Share of the true k-NN that a method found, ties counted as ann-benchmarks does.

    true_kth_dist: (nq,) the k-th smallest true distance of each query.
    candidate_true_dists: (nq, m) true distances of the method's top m candidates (inf or NaN for a
        missing candidate); m = k gives recall@k, m = 100 with k = 10 gives R10@100.
    A candidate is found when its true distance <= true_kth_dist + tolerance; each query scores
    min(found, k) / k. Candidates must be distinct items.
    """
    kth = np.asarray(true_kth_dist, dtype=np.float64)
    candidates = np.asarray(candidate_true_dists, dtype=np.float64)
    if kth.ndim != 1 or candidates.ndim != 2 or candidates.shape[0] != kth.shape[0]:
        raise DataError(
            "expected true_kth_dist (nq,) and candidate_true_dists (nq, m), "
            f"got {kth.shape} and {candidates.shape}"
        )
    k = _check_depth("k", k)
    found = (candidates <= kth[:, None] + tolerance).sum(axis=1)
    return float(np.minimum(found, k).mean() / k)


def true_distances(
    query_x: np.ndarray, db_x: np.ndarray, ids: np.ndarray, *, chunk_size: int | None = None
) -> np.ndarray:
    """Exact Euclidean distances (nq, m) float64 from each query to the database items ids (nq, m).

    Computed directly from differences in float64; id -1 (missing) gives inf.
    """
    query_x, db_x = _check_vector_pair(query_x, db_x)
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != len(query_x):
        raise DataError(f"ids must be (n_queries={len(query_x)}, m), got shape {ids.shape}")
    dists = np.full(ids.shape, np.inf)
    bytes_per_query = max(1, ids.shape[1]) * db_x.shape[1] * 16
    for rows in _query_chunks(len(query_x), bytes_per_query, chunk_size):
        chunk_ids = ids[rows]
        present = chunk_ids >= 0
        items = db_x[np.where(present, chunk_ids, 0)].astype(np.float64)  # (chunk, m, d)
        diffs = items - query_x[rows, None, :].astype(np.float64)
        dists[rows] = np.where(present, np.sqrt(np.einsum("qmd,qmd->qm", diffs, diffs)), np.inf)
    return dists


@dataclass(frozen=True, eq=False)
class NeighbourTruth:
    """The exact Euclidean k nearest neighbours of each query in the original space (e.g. pixels).

    Build it once with exact_neighbours and pass it to evaluate_binary / evaluate_float.
    ids: (nq, k) int64 by (distance, index); distances: (nq, k) float64, exact Euclidean.
    """

    query_x: np.ndarray
    db_x: np.ndarray
    ids: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    @property
    def kth_distance(self) -> np.ndarray:
        """(nq,) the k-th true distance: the largest of the k exact distances."""
        return self.distances.max(axis=1)

    def recall(self, candidate_ids: np.ndarray) -> float:
        """recall_at for a method's ranked candidate ids (nq, m): recall@k when m = k, Rk@m when m > k."""
        candidate_dists = true_distances(self.query_x, self.db_x, candidate_ids)
        return recall_at(self.kth_distance, candidate_dists, k=self.k)


def exact_neighbours(
    query_x: np.ndarray, db_x: np.ndarray, *, k: int = RECALL_K, chunk_size: int | None = None
) -> NeighbourTruth:
    """Exact Euclidean k-NN of every query by exhaustive float64 search: the truth for neighbour recall."""
    ids = float_ranking(query_x, db_x, topk=k, chunk_size=chunk_size)
    return NeighbourTruth(query_x=query_x, db_x=db_x, ids=ids, distances=true_distances(query_x, db_x, ids))


# ----------------------------------------------------------------------------- one call per representation


def _recalls(truth: NeighbourTruth | None, top_ids: np.ndarray) -> tuple[float | None, float | None]:
    if truth is None:
        return None, None
    if truth.k != RECALL_K or len(truth.ids) != len(top_ids):
        raise ConfigError(
            f"neighbour truth must hold the true top {RECALL_K} of the same {len(top_ids)} queries, "
            f"got top {truth.k} of {len(truth.ids)}: build it with exact_neighbours(query_x, db_x)"
        )
    return truth.recall(top_ids[:, :RECALL_K]), truth.recall(top_ids[:, :RECALL_DEPTH])


def _report(
    ap_at_depth: np.ndarray,
    ap_all: np.ndarray,
    p_at_r2: float | None,
    empty_share: float | None,
    truth: NeighbourTruth | None,
    top_ids: np.ndarray,
) -> dict[str, float | None]:
    recall_at_10, r10_at_100 = _recalls(truth, top_ids)
    return {
        "map_at_1000": float(ap_at_depth.mean()),
        "map_all": float(ap_all.mean()),
        "p_at_r2": p_at_r2,
        "empty_ball_share": empty_share,
        "recall_at_10": recall_at_10,
        "r10_at_100": r10_at_100,
    }


def evaluate_binary(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    truth: NeighbourTruth | None = None,
    chunk_size: int | None = None,
) -> dict[str, float | None]:
    """Every protocol metric of packed binary codes, in one pass over the queries.

    Returns {map_at_1000, map_all, p_at_r2, empty_ball_share, recall_at_10, r10_at_100}; the two
    recalls are None without a truth (from exact_neighbours on the original vectors).
    """
    query_codes, db_codes = _check_code_pair(query_codes, db_codes)
    query_labels = _check_labels(query_labels, len(query_codes), "query")
    db_labels = _check_labels(db_labels, len(db_codes), "database")
    nbits, n_queries = db_codes.shape[1] * 8, len(query_codes)
    ap_at_depth, ap_all = np.empty(n_queries), np.empty(n_queries)
    retrieved, hits = np.empty((n_queries, nbits + 1), np.int64), np.empty((n_queries, nbits + 1), np.int64)
    top_ids = np.empty((n_queries, min(RECALL_DEPTH, len(db_codes))), np.int64)
    for rows, dists in _hamming_distance_chunks(query_codes, db_codes, chunk_size):
        same_class = db_labels[None, :] == query_labels[rows, None]
        ranking = _rank_hamming(dists, nbits)
        relevant = np.take_along_axis(same_class, ranking, axis=1)
        ap_at_depth[rows] = average_precisions(relevant, k=MAP_DEPTH)
        ap_all[rows] = average_precisions(relevant)
        retrieved[rows], hits[rows] = _cumulative_ball_counts(dists, same_class, nbits)
        top_ids[rows] = ranking[:, : top_ids.shape[1]]
    r = min(BALL_RADIUS, nbits)
    p_at_r2 = float(_ball_precisions(retrieved[:, r], hits[:, r]).mean())
    empty_share = float((retrieved[:, r] == 0).mean())
    return _report(ap_at_depth, ap_all, p_at_r2, empty_share, truth, top_ids)


def evaluate_float(
    query_vectors: np.ndarray,
    db_vectors: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    truth: NeighbourTruth | None = None,
    chunk_size: int | None = None,
) -> dict[str, float | None]:
    """Every protocol metric of float vectors ranked by Euclidean distance (exhaustive, float64).

    Same keys as evaluate_binary; p_at_r2 and empty_ball_share are None (no Hamming ball).
    """
    query_vectors, db_vectors = _check_vector_pair(query_vectors, db_vectors)
    query_labels = _check_labels(query_labels, len(query_vectors), "query")
    db_labels = _check_labels(db_labels, len(db_vectors), "database")
    n_queries = len(query_vectors)
    ap_at_depth, ap_all = np.empty(n_queries), np.empty(n_queries)
    top_ids = np.empty((n_queries, min(RECALL_DEPTH, len(db_vectors))), np.int64)
    for rows, keys in _l2_rank_key_chunks(query_vectors, db_vectors, chunk_size):
        ranking = np.argsort(keys, axis=1, kind="stable")
        relevant = db_labels[ranking] == query_labels[rows, None]
        ap_at_depth[rows] = average_precisions(relevant, k=MAP_DEPTH)
        ap_all[rows] = average_precisions(relevant)
        top_ids[rows] = ranking[:, : top_ids.shape[1]]
    return _report(ap_at_depth, ap_all, None, None, truth, top_ids)
