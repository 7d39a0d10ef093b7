"""Searches that equal brute force, ties by id, on top of Milvus's searches.

With an exact index (BIN_FLAT, FLAT) Milvus finds the true nearest distances, but it cuts a group of
equal distances at k arbitrarily, and one call returns at most MAX_TOPK hits. So:

k-NN   search with a few more than k; a query is complete when fewer hits came back than asked
       (that is every visible item) or the last hit is farther than the k-th: then every item at
       the k-th distance is in hand and sorting by (distance, id) gives the answer. Otherwise ask
       again with 4x the limit; past MAX_TOPK, the items at the k-th distance are read as a range
       search of exactly that distance, window by window of ids (smallest ids first).
range  one range search (0 <= distance < radius + 1) limited to RANGE_FIRST_LIMIT hits; a query
       that fills it is read again window by window of ids, MAX_TOPK hits per call, a window split
       in two while it fills that (a window of at most MAX_TOPK ids never does).

Both read only the rows of `where` (a generation's filter), so they answer for one generation.
"""

from __future__ import annotations

import numpy as np

from hashae.index.backends.base import Neighbours, Results, SearchArgumentError
from hashae.index.backends.milvus.collection import MAX_TOPK, ItemsCollection, Metric, id_window

QUERY_BATCH = 64  # queries per Milvus call
GROWTH = 4
EXTRA = 64  # hits asked beyond k on the first try (more rarely pays: clustered 64-bit codes, k=10: 1.12 -> 1.0 calls)
RANGE_FIRST_LIMIT = 1_024  # hits asked by a range search at first; a query that fills it is read by id windows


class Searcher:
    """Exact searches of one generation: the rows of `where` among ids below id_end."""

    def __init__(self, collection: ItemsCollection, *, where: str, n_visible: int, id_end: int):
        self.collection = collection
        self.where = where
        self.n_visible = n_visible
        self.id_end = id_end

    # ------------------------------------------------------------------------------------ k-NN
    def knn(self, queries: np.ndarray, *, metric: Metric, k: int) -> Results:
        """Per query, the k nearest, sorted by (distance, id)."""
        if self.n_visible == 0 or len(queries) == 0:
            return [_neighbours([], metric) for _ in range(len(queries))]
        if k > MAX_TOPK and self.n_visible > MAX_TOPK:
            raise SearchArgumentError(f"k must be at most {MAX_TOPK} on a Milvus store of more items, got {k}")
        results: Results = [_neighbours([], metric) for _ in range(len(queries))]
        for start in range(0, len(queries), QUERY_BATCH):
            batch = range(start, min(start + QUERY_BATCH, len(queries)))
            for i, hits in self._knn_batch(queries, list(batch), metric=metric, k=k).items():
                results[i] = hits
        return results

    def _knn_batch(self, queries: np.ndarray, pending: list[int], *, metric: Metric, k: int) -> dict[int, Neighbours]:
        done: dict[int, Neighbours] = {}
        limit = self._cap(max(k + EXTRA, 2 * k))
        while pending:
            found = self.collection.search(queries[pending], metric=metric, limit=limit, where=self.where)
            retry = []
            for i, pairs in zip(pending, found):
                pairs.sort()
                if len(pairs) < limit or limit >= self.n_visible or pairs[-1][0] > pairs[k - 1][0]:
                    done[i] = _neighbours(pairs[:k], metric)
                elif limit < self._cap(limit * GROWTH):
                    retry.append(i)
                else:
                    done[i] = _neighbours(self._complete_tie(queries[i], pairs, metric=metric, k=k), metric)
            pending, limit = retry, self._cap(limit * GROWTH)
        return done

    def _cap(self, limit: int) -> int:
        return max(1, min(limit, self.n_visible, MAX_TOPK))

    def _complete_tie(self, query: np.ndarray, pairs: list, *, metric: Metric, k: int) -> list:
        """The k nearest when the group at the k-th distance may be larger than what came back."""
        kth = pairs[k - 1][0]
        closer = [pair for pair in pairs if pair[0] < kth]
        tied = self._ranged(query, metric=metric, within=metric.shell(kth), wanted=k - len(closer))
        return closer + [(kth, item_id) for _, item_id in tied]

    # ----------------------------------------------------------------------------------- range
    def within(self, queries: np.ndarray, *, metric: Metric, radius: int) -> Results:
        """Per query, every item at distance <= radius, sorted by (distance, id)."""
        if self.n_visible == 0 or len(queries) == 0:
            return [_neighbours([], metric) for _ in range(len(queries))]
        bounds = (0.0, float(radius) + 1.0)
        limit = self._cap(RANGE_FIRST_LIMIT)
        results: Results = []
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            found = self.collection.search(batch, metric=metric, limit=limit, where=self.where, within=bounds)
            for query, pairs in zip(batch, found):
                if len(pairs) >= limit and limit < self.n_visible:  # may have been cut: read by windows
                    pairs = self._ranged(query, metric=metric, within=bounds)
                results.append(_neighbours(sorted(pairs), metric))
        return results

    def _ranged(self, query: np.ndarray, *, metric: Metric, within: tuple[float, float], wanted: int | None = None) -> list:
        """Every (distance, id) with low <= distance < high, read window by window of ids in
        ascending order; stops once `wanted` items are found (the smallest ids)."""
        found: list = []
        windows = [(0, self.id_end)]
        while windows and (wanted is None or len(found) < wanted):
            start, stop = windows.pop()
            where = f"{self.where} and {id_window(start, stop)}"
            pairs = self.collection.search(query[None], metric=metric, limit=MAX_TOPK, where=where, within=within)[0]
            if len(pairs) >= MAX_TOPK and stop - start > MAX_TOPK:
                middle = (start + stop) // 2
                windows += [(middle, stop), (start, middle)]  # the lower half is read first
                continue
            found += sorted(pairs, key=lambda pair: pair[1])
        return found if wanted is None else found[:wanted]


def _neighbours(pairs: list, metric: Metric) -> Neighbours:
    """(distance, id) pairs in order as Neighbours: Hamming distances as integers, L2 as float32."""
    return Neighbours.of_pairs(pairs, dtype=np.int64 if metric.integer else np.float32)
