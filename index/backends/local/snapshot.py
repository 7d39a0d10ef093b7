"""The local store's read view: one committed generation, answered from its loaded index files.

Exact: Hamming k-NN and range searches equal brute force, ties by id (multi-index hashing with a
popcount-scan fallback, see hamming.py); latent k-NN is exact flat L2 below the store's HNSW
threshold and approximate (high recall) above it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from hashae.index.backends.base import ItemInfo, Neighbours, Results, UnknownItemError
from hashae.index.backends.common import GenerationView, as_ids, check_int
from hashae.index.backends.local.catalogue import Generation
from hashae.index.backends.local.hamming import HammingIndex, UnknownIdError
from hashae.index.backends.local.latent import LatentError, LatentIndex

if TYPE_CHECKING:
    from hashae.index.backends.local.store import LocalStore


class LocalSnapshot(GenerationView):
    """Searches and lookups answered from one committed generation, whatever writers do meanwhile.

    Every search returns Results: one Neighbours per query, best first, sorted by (distance, id),
    without padding (a query may get fewer than k hits when the store holds fewer items).
    """

    def __init__(
        self,
        store: LocalStore,
        generation: Generation,
        hamming: HammingIndex,
        latent: LatentIndex,
        *,
        rebuilt_because: str | None = None,
    ):
        self.store = store
        self.generation = generation
        self.hamming = hamming
        self.latent = latent
        self.rebuilt_because = rebuilt_because  # why the files were rebuilt from SQLite, or None
        # "auto" probes the multi-index tables when that beats a scan; a short-lived process (a CLI
        # query) scans: loading the compiled probing kernels costs more than scanning millions.
        self.hamming_strategy = "scan" if store.short_lived else "auto"

    @property
    def n_items(self) -> int:
        return self.hamming.ntotal

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of items by id (ids purged since this snapshot was taken are absent)."""
        return self.store.catalogue.items(ids)

    def item_ids(self) -> np.ndarray:
        """Every id of this generation, int64 (n,), ascending."""
        return self.hamming.ids()

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored packed codes uint8 (n, bits/8) of these ids, in order; UnknownItemError if absent."""
        ids = as_ids(ids)
        try:
            return self.hamming.codes_of(ids)
        except UnknownIdError as err:
            raise UnknownItemError(f"{err} (generation {self.gen})") from None

    def latents_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored latents float32 (n, latent_dim) of these ids, in order; UnknownItemError if absent."""
        ids = as_ids(ids)
        unknown = ids[~self.hamming.contains(ids)]  # a position look-up: isin over every id cost 0.2 ms a hybrid query
        if len(unknown):
            raise UnknownItemError(f"ids not in generation {self.gen}: {unknown[:5].tolist()}")
        try:
            return self.latent.vectors_of(ids)
        except LatentError as err:
            raise UnknownItemError(f"{err} (generation {self.gen})") from None

    # -------------------------------------------------------------------------------- searches
    def search_hamming(self, codes: np.ndarray, *, k: int) -> Results:
        """Exact Hamming k-NN of packed uint8 codes (nq, bits/8); distances in bits."""
        check_int("k", k, minimum=1)
        distances, ids = self.hamming.search(codes, k=int(k), strategy=self.hamming_strategy)
        return _per_query(distances, ids, dtype=np.int64)

    def range_hamming(self, codes: np.ndarray, *, radius: int) -> Results:
        """Every item within Hamming distance <= radius of each code, sorted by (distance, id)."""
        check_int("radius", radius, minimum=0)
        found = self.hamming.range_search(codes, radius=int(radius), strategy=self.hamming_strategy)
        return [_neighbours(distances, ids, dtype=np.int64) for distances, ids in found]

    def search_latent(self, latents: np.ndarray, *, k: int) -> Results:
        """k-NN of float32 latents (nq, latent_dim) by squared L2 (exact unless the index is HNSW)."""
        check_int("k", k, minimum=1)
        return _per_query(*self.latent.search(latents, k=int(k)), dtype=np.float32)


def _neighbours(distances: np.ndarray, ids: np.ndarray, *, dtype: type) -> Neighbours:
    kept = ids >= 0  # k-NN rows are padded with -1 past the items there are
    return Neighbours(ids[kept], distances[kept].astype(dtype))


def _per_query(distances: np.ndarray, ids: np.ndarray, *, dtype: type) -> Results:
    return [_neighbours(d, i, dtype=dtype) for d, i in zip(distances, ids)]
