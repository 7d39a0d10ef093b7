"""The read view of a Milvus store: one committed generation, answered by Milvus.

Every call reads the generation's collection through its filter (added_gen <= G < removed_gen), so
rows a writer adds or drops meanwhile stay invisible. Rows G shows are purged by the commit of
G + 2 at the earliest: a view older than that may miss items (is_stale() says when to take a new
one). With BIN_FLAT searches equal brute force, ties by id (exact.py); BIN_IVF_FLAT is approximate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from hashae.codes import check_codes
from hashae.index.backends.base import ItemInfo, Results, SearchArgumentError, UnknownItemError
from hashae.index.backends.common import GenerationView, as_ids, check_int
from hashae.index.backends.milvus.catalogue import Generation
from hashae.index.backends.milvus.collection import HAMMING, NOT_REMOVED, SQUARED_L2, ItemsCollection, visible_at
from hashae.index.backends.milvus.exact import Searcher
from hashae.index.backends.milvus.names import text_from_db

if TYPE_CHECKING:
    from hashae.index.backends.milvus.store import MilvusStore


class MilvusSnapshot(GenerationView):
    """Searches and lookups of one committed generation of a Milvus store."""

    def __init__(self, store: MilvusStore, generation: Generation, collection: ItemsCollection):
        self.store = store
        self.generation = generation
        self.collection = collection
        self.where = visible_at(generation.gen)
        self._searcher = Searcher(collection, where=self.where, n_visible=generation.n_items, id_end=store.catalogue.next_id())

    @property
    def n_items(self) -> int:
        return self.generation.n_items

    # ------------------------------------------------------------------------- rows by id
    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of the items of this generation with these ids (others are absent)."""
        rows = self.collection.rows_by_ids(list(ids), where=self.where, fields=ItemInfo.__dataclass_fields__)
        return {int(row["id"]): item_info(row) for row in rows}

    def item_ids(self) -> np.ndarray:
        """Every id of this generation, int64 (n,), ascending."""
        rows = self.collection.rows_where(self.where, fields=["id"], id_end=self.store.catalogue.next_id())
        return np.sort(np.fromiter((row["id"] for row in rows), dtype=np.int64))

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored packed codes uint8 (n, bits/8) of these ids, in order; UnknownItemError if absent."""
        values = self._vectors_of(ids, "code")
        width = self.settings.code_bytes
        return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), width).copy()

    def latents_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored latents float32 (n, latent_dim) of these ids, in order; UnknownItemError if absent."""
        values = self._vectors_of(ids, "latent")
        return np.array(values, dtype=np.float32).reshape(len(values), self.settings.latent_dim)

    def _vectors_of(self, ids: np.ndarray, field: str) -> list:
        ids = as_ids(ids)
        rows = self.collection.rows_by_ids(ids.tolist(), where=self.where, fields=["id", field])
        by_id = {int(row["id"]): _vector(row[field]) for row in rows}
        missing = [int(i) for i in ids if int(i) not in by_id]
        if missing:
            raise UnknownItemError(f"ids not in generation {self.gen}: {missing[:5]}")
        return [by_id[int(i)] for i in ids]

    # ----------------------------------------------------------------------------- searches
    def search_hamming(self, codes: np.ndarray, *, k: int) -> Results:
        """Hamming k-NN of packed uint8 codes (nq, bits/8); distances in bits, ties by id."""
        check_int("k", k, minimum=1)
        codes = check_codes(codes, nbits=self.settings.bits)
        return self._searcher.knn(codes, metric=HAMMING, k=int(k))

    def range_hamming(self, codes: np.ndarray, *, radius: int) -> Results:
        """Every item within Hamming distance <= radius of each code, sorted by (distance, id)."""
        check_int("radius", radius, minimum=0)
        codes = check_codes(codes, nbits=self.settings.bits)
        return self._searcher.within(codes, metric=HAMMING, radius=int(radius))

    def search_latent(self, latents: np.ndarray, *, k: int) -> Results:
        """k-NN of float32 latents (nq, latent_dim) by squared L2, ties by id."""
        check_int("k", k, minimum=1)
        latents = np.asarray(latents)
        if latents.dtype != np.float32 or latents.ndim != 2 or latents.shape[1] != self.settings.latent_dim:
            raise SearchArgumentError(
                f"query latents must be float32 (n, {self.settings.latent_dim}), got {latents.dtype} {latents.shape}"
            )
        if not np.isfinite(latents).all():
            raise SearchArgumentError("query latents contain NaN or infinite values")
        return self._searcher.knn(latents, metric=SQUARED_L2, k=int(k))


def item_info(row: dict) -> ItemInfo:
    """An ItemInfo from a Milvus row (NOT_REMOVED -> removed_gen None)."""
    removed = int(row["removed_gen"])
    return ItemInfo(
        id=int(row["id"]),
        path=text_from_db(row["path"]),
        label=text_from_db(row["label"]),
        size=int(row["size"]),
        mtime_ns=int(row["mtime_ns"]),
        content_hash=row["content_hash"],
        added_gen=int(row["added_gen"]),
        removed_gen=None if removed == NOT_REMOVED else removed,
        added_at=row["added_at"],
    )


def _vector(value):
    """A vector field as Milvus returns it: bytes (or [bytes]) for a code, a float list for a latent."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes):
        return value[0]
    return value
