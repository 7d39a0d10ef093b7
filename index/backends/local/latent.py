"""LatentIndex: FAISS over float32 VAE latents (the means), with caller-chosen int64 ids.

Exact flat L2 search while the collection is small; HNSW (approximate, much faster per query) once it
holds `hnsw_threshold` vectors or more. The wrapper answers like HammingIndex:

    search(queries, k=...) -> (distances float32 (nq, k), ids int64 (nq, k))

Distances are squared L2, as FAISS computes them. Rows are sorted by (distance, id) and padded with
id -1 and distance +inf when fewer than k vectors exist. FAISS quirks hidden here: its flat search
breaks ties by insertion order and may cut a tie group at k (we complete and sort ties by id); it
pads with FLT_MAX (we use inf); HNSW cannot remove vectors (we rebuild it without them); an
IndexIDMap2 accepts a duplicate id silently (we refuse it).
"""

from __future__ import annotations

import faiss
import numpy as np

from hashae.errors import HashaeError

HNSW_NEIGHBOURS = 32  # M: graph degree; FAISS's usual choice for a good recall / memory balance
HNSW_EF_SEARCH = 64  # candidates explored per query (raised to k when k is larger)


class LatentError(HashaeError):
    """A latent array or latent index file is wrong: dtype, shape, ids, or corrupt bytes."""


class LatentIndex:
    """Nearest neighbours in latent space by squared L2 distance, keyed by int64 ids."""

    def __init__(self, dim: int, *, hnsw_threshold: int = 200_000, ef_search: int = HNSW_EF_SEARCH):
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise LatentError(f"latent dimension must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.hnsw_threshold = int(hnsw_threshold)
        self.ef_search = int(ef_search)
        self._index = _new_faiss_index(self.dim, hnsw=False)

    # ----------------------------------------------------------------------------------- state
    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self._index.ntotal)

    @property
    def is_hnsw(self) -> bool:
        """True when the index is the approximate HNSW graph, False when it is exact flat L2."""
        return isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSWFlat)

    def ids(self) -> np.ndarray:
        """All ids in the index, int64, in insertion order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    # ------------------------------------------------------------------------------- mutation
    def add(self, latents: np.ndarray, ids: np.ndarray) -> None:
        """Add latents float32 (n, dim) under ids int64 (n,); ids must be new, unique and >= 0."""
        latents = check_latents(latents, dim=self.dim)
        ids = _check_ids(ids, n=latents.shape[0])
        taken = ids[np.isin(ids, self.ids())]
        if taken.size:
            raise LatentError(f"ids already in the latent index: {taken[:5].tolist()}; remove them first")
        if self.ntotal + len(ids) >= self.hnsw_threshold and not self.is_hnsw:
            self._rebuild(np.concatenate([self.ids(), ids]), np.concatenate([self._all_vectors(), latents]))
        elif len(ids):
            self._index.add_with_ids(latents, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors with these ids (unknown ids are ignored); return how many went."""
        ids = _check_ids(ids, n=None)
        if not ids.size or not self.ntotal:
            return 0
        before = self.ntotal
        if self.is_hnsw:  # HNSW graphs cannot drop nodes: rebuild from the vectors that stay
            keep = ~np.isin(self.ids(), ids)
            self._rebuild(self.ids()[keep], self._all_vectors()[keep])
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        return before - self.ntotal

    # -------------------------------------------------------------------------------- queries
    def search(self, queries: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest vectors of each query: (squared L2 float32 (nq, k), ids int64 (nq, k)).

        Sorted by (distance, id); missing neighbours are id -1 at distance +inf. Exact for the flat
        index, ties included; approximate (high recall) for HNSW.
        """
        queries = check_latents(queries, dim=self.dim, what="queries")
        k = _check_k(k)
        nq = queries.shape[0]
        if not self.ntotal or not nq:
            return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
        if self.is_hnsw:
            dist, ids = self._faiss_search(queries, k)
        else:
            dist, ids = self._search_with_whole_ties(queries, k)
        return _sorted_by_distance_then_id(dist, ids, k)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored latents of these ids, float32 (len(ids), dim); raises LatentError for unknown ids."""
        ids = _check_ids(ids, n=None, unique=False)
        if not ids.size:
            return np.empty((0, self.dim), np.float32)
        try:
            return self._index.reconstruct_batch(ids)
        except RuntimeError:  # FAISS refuses unknown ids; name them
            missing = ids[~np.isin(ids, self.ids())]
            raise LatentError(f"ids not in the latent index: {missing[:5].tolist()}") from None

    # -------------------------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        """The index as bytes (FAISS's own format, vectors and ids included)."""
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, hnsw_threshold: int = 200_000, ef_search: int = HNSW_EF_SEARCH
    ) -> LatentIndex:
        """Rebuild an index written by to_bytes; raises LatentError when the bytes are not one."""
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except (RuntimeError, MemoryError) as err:
            reason = _faiss_reason(err)
            raise LatentError(f"latent index data is corrupt ({reason}); rebuild the index") from err
        if not isinstance(index, faiss.IndexIDMap2) or not _is_supported_inner(index.index):
            raise LatentError(f"latent index file holds an unexpected index type {type(index).__name__}")
        latent = cls(index.d, hnsw_threshold=hnsw_threshold, ef_search=ef_search)
        latent._index = index
        return latent

    # ------------------------------------------------------------------------------- helpers
    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            return self._index.search(queries, k, params=params)
        return self._index.search(queries, k)

    def _search_with_whole_ties(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat search widened until every row's last fetched distance is beyond its k-th one.

        Then no item tied with the k-th was left out, and sorting by (distance, id) is exact.
        """
        wanted = min(k, self.ntotal)
        fetch = min(wanted + 1, self.ntotal)
        while True:
            dist, ids = self._faiss_search(queries, fetch)
            if fetch >= self.ntotal or not (dist[:, -1] <= dist[:, wanted - 1]).any():
                return dist, ids
            fetch = min(2 * fetch, self.ntotal)

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the FAISS index by a fresh one holding exactly these vectors; HNSW when large."""
        self._index = _new_faiss_index(self.dim, hnsw=len(ids) >= self.hnsw_threshold)
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors), ids)

    def _all_vectors(self) -> np.ndarray:
        """Every stored vector, float32 (ntotal, dim), in the same order as ids()."""
        if not self.ntotal:
            return np.empty((0, self.dim), np.float32)
        return self._index.index.reconstruct_n(0, self.ntotal)


def check_latents(x: np.ndarray, *, dim: int, what: str = "latents") -> np.ndarray:
    """Validate latents: a finite float32 array (n, dim). Wrong dtypes are refused, never cast."""
    if not isinstance(x, np.ndarray):
        raise LatentError(f"{what} must be a numpy float32 array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise LatentError(f"{what} must have dtype float32, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise LatentError(f"{what} must have shape (n, {dim}), got {x.shape}")
    if not np.isfinite(x).all():
        raise LatentError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(x)


def _new_faiss_index(dim: int, *, hnsw: bool) -> faiss.IndexIDMap2:
    inner = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS) if hnsw else faiss.IndexFlatL2(dim)
    return faiss.IndexIDMap2(inner)  # the python wrapper keeps `inner` alive


def _is_supported_inner(inner: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(inner), (faiss.IndexFlatL2, faiss.IndexHNSWFlat))


def _check_ids(ids: np.ndarray, *, n: int | None, unique: bool = True) -> np.ndarray:
    if not isinstance(ids, np.ndarray) or ids.dtype != np.int64 or ids.ndim != 1:
        got = f"{ids.dtype} {ids.shape}" if isinstance(ids, np.ndarray) else type(ids).__name__
        raise LatentError(f"ids must be a 1-D numpy int64 array, got {got}")
    if n is not None and len(ids) != n:
        raise LatentError(f"got {len(ids)} ids for {n} latents")
    if ids.size and ids.min() < 0:
        raise LatentError("ids must be >= 0 (-1 marks a missing result)")
    if unique and len(np.unique(ids)) != len(ids):
        raise LatentError("ids must be unique")
    return np.ascontiguousarray(ids)


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise LatentError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _sorted_by_distance_then_id(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (distance, id), missing last as (inf, -1), and keep k columns."""
    missing = ids < 0
    dist = np.where(missing, np.inf, dist).astype(np.float32)
    sort_ids = np.where(missing, np.iinfo(np.int64).max, ids)
    order = np.lexsort((sort_ids, dist), axis=-1)[:, :k]
    dist = np.take_along_axis(dist, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    if ids.shape[1] < k:  # fewer vectors than k: pad
        pad = k - ids.shape[1]
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return dist, ids.astype(np.int64, copy=False)


def _faiss_reason(err: BaseException) -> str:
    """The useful tail of a FAISS error ("Error in <C++ signature> at file:line: Error: <reason>")."""
    text = str(err).strip()
    return text.rsplit("Error: ", 1)[-1][:200] if text else type(err).__name__
