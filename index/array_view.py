"""ArrayView: a ReadView over codes and latents held in memory.

For the bench and tests, which search arrays that no store holds through the same search module
(index/search.py) as the store does. Hamming searches go through the local store's own exact
index (multi-index hashing, hashae.index.backends.exact_hamming), so the bench's look-up times are
the product's; latent ones are an exhaustive numpy scan. Results follow the ReadView contract
exactly: sorted by (distance, id), ties by id, no padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hashae.codes import check_codes
from hashae.errors import HashaeError
from hashae.index.backends.base import ItemInfo, ModelPair, ModelRecord, Neighbours, Results, UnknownItemError
from hashae.index.backends.exact_hamming import HammingIndex
from hashae.index.settings import StoreSettings



class ArrayView:
    """Codes uint8 (n, bits/8) and latents float32 (n, d) under ids int64 (n,) (default 0..n-1).

    paths / labels: optional per-item metadata returned by items() (paths default to the id).
    """

    def __init__(
        self,
        codes: np.ndarray,
        latents: np.ndarray | None = None,
        *,
        ids: np.ndarray | None = None,
        paths: Sequence[str] | None = None,
        labels: Sequence[str | None] | None = None,
        image_size: int = 28,
        channels: int = 1,
    ) -> None:
        codes = check_codes(codes)
        n = len(codes)
        latents = np.zeros((n, 1), np.float32) if latents is None else np.ascontiguousarray(latents, dtype=np.float32)
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if latents.ndim != 2 or len(latents) != n or ids.shape != (n,):
            raise HashaeError(f"an ArrayView needs as many latents and ids as codes ({n}), got {len(latents)} and {len(ids)}")
        order = np.argsort(ids, kind="stable")
        if n and (np.diff(ids[order]) == 0).any():
            raise HashaeError("an ArrayView's ids must be unique")
        self._ids, self._codes, self._latents = ids[order], codes[order], latents[order]
        self._hamming = HammingIndex(codes.shape[1] * 8)
        if n:
            self._hamming.add(self._codes, self._ids)
        self._paths = None if paths is None else [paths[i] for i in order]
        self._labels = None if labels is None else [labels[i] for i in order]
        self._created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._settings = StoreSettings(bits=codes.shape[1] * 8, latent_dim=latents.shape[1], image_size=image_size, channels=channels)

    # --------------------------------------------------------------------------- ReadView
    @property
    def gen(self) -> int:
        return 1

    @property
    def settings(self) -> StoreSettings:
        return self._settings

    @property
    def n_items(self) -> int:
        return len(self._ids)

    @property
    def committed_at(self) -> str:
        return self._created_at

    def is_stale(self) -> bool:
        return False

    def models(self) -> ModelPair | None:
        return None

    def model_dir(self, model: ModelRecord) -> Path:
        return Path(model.dir)

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        wanted = np.fromiter((int(i) for i in ids), dtype=np.int64)
        rows = self._rows(wanted, strict=False)
        found = {}
        for item, row in zip(wanted.tolist(), rows.tolist()):
            if row >= 0:
                path = self._paths[row] if self._paths is not None else str(item)
                label = self._labels[row] if self._labels is not None else None
                found[item] = ItemInfo(item, path, label, 0, 0, "", 1, None, self._created_at)
        return found

    def item_ids(self) -> np.ndarray:
        return self._ids.copy()

    def search_hamming(self, codes: np.ndarray, *, k: int) -> Results:
        codes = check_codes(codes, nbits=self._settings.bits)
        k = min(k, self.n_items)
        if k == 0:
            return [Neighbours.of_pairs([], dtype=np.int64) for _ in codes]
        distances, ids = self._hamming.search(codes, k=k)
        return [Neighbours(i_row, d_row.astype(np.int64)) for d_row, i_row in zip(distances, ids)]

    def range_hamming(self, codes: np.ndarray, *, radius: int) -> Results:
        codes = check_codes(codes, nbits=self._settings.bits)
        if not self.n_items:
            return [Neighbours.of_pairs([], dtype=np.int64) for _ in codes]
        return [Neighbours(ids, distances.astype(np.int64)) for distances, ids in self._hamming.range_search(codes, radius=int(radius))]

    def search_latent(self, latents: np.ndarray, *, k: int) -> Results:
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        results = []
        for query in latents:
            distances = ((self._latents - query) ** 2).sum(axis=1, dtype=np.float32)
            results.append(_smallest(distances, self._ids, k))
        return results

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        return self._codes[self._rows(np.asarray(ids, dtype=np.int64))]

    def latents_of(self, ids: np.ndarray) -> np.ndarray:
        return self._latents[self._rows(np.asarray(ids, dtype=np.int64))]

    # --------------------------------------------------------------------------- internals
    def _rows(self, ids: np.ndarray, *, strict: bool = True) -> np.ndarray:
        rows = np.searchsorted(self._ids, ids)
        rows = np.minimum(rows, max(len(self._ids) - 1, 0))
        known = (self._ids[rows] == ids) if len(self._ids) else np.zeros(len(ids), bool)
        if strict and not known.all():
            raise UnknownItemError(f"ids not in the view: {ids[~known][:5].tolist()}")
        return np.where(known, rows, -1)


def _smallest(distances: np.ndarray, ids: np.ndarray, k: int) -> Neighbours:
    """The k smallest distances by (distance, id): everything tied with the k-th is considered."""
    if k < len(distances):
        kth = np.partition(distances, k - 1)[k - 1]
        rows = np.flatnonzero(distances <= kth)
    else:
        rows = np.arange(len(distances))
    rows = rows[np.lexsort((ids[rows], distances[rows]))][:k]
    return Neighbours(ids[rows], distances[rows])
