"""The write transaction of a Milvus store: changes towards generation G + 1, and its commit.

Milvus has no transaction over several calls, so every row carries its generation instead:
  add_items      reserves ids in the catalogue (durably, first), then inserts the rows with
                 added_gen = G + 1: pending, invisible to readers of G.
  remove_items   rewrites the rows (upsert) with removed_gen = G + 1: still visible to readers of G.
  commit         flushes the collection, counts the rows G + 1 shows, then inserts the generation
                 row into the catalogue: THE commit point. Then purges rows no reader of G + 1 or G
                 can see, and collections no generation needs.
A writer killed anywhere leaves G committed and intact; what it wrote to Milvus is pending and the
next writer adopts it (live_items lists it), so a re-run converges on what an uninterrupted run
makes. See the package docstring for exactly what a kill can and cannot lose.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hashae.codes import check_codes
from hashae.index.backends.base import LiveItem, ModelPair, NewItem, StoreError
from hashae.index.backends.catalogue_tables import utc_now
from hashae.index.backends.common import WriterCommon
from hashae.index.backends.milvus.catalogue import CollectionRecord, MilvusCatalogue
from hashae.index.backends.milvus.collection import (
    LIVE,
    NOT_REMOVED,
    ROW_FIELDS,
    ItemsCollection,
    visible_at,
)
from hashae.index.backends.milvus.connection import is_lite_uri
from hashae.index.backends.milvus.names import text_from_db, text_to_db
from hashae.index.settings import StoreSettings

if TYPE_CHECKING:
    from hashae.index.backends.milvus.store import MilvusStore

COLLECTION_PREFIX = "hashae_"


class MilvusWriteTransaction(WriterCommon):
    """Changes towards the next generation (self.gen), made under the store's write lock.

    Skipped files and model records: WriterCommon (common.py).
    """

    def __init__(self, store: MilvusStore, catalogue: MilvusCatalogue):
        self.store = store
        self.catalogue = catalogue  # the writer's own read-write connection
        self.gen = catalogue.last_generation() + 1
        self._live_paths: dict[str, int] | None = None  # path -> id of every live row, once read
        working = catalogue.working_collection()
        if working is not None:
            self._open_collection(working)  # made here when a killed writer recorded it but never made it
        self._drop_unneeded_collections()
        self._remove_unrecorded_model_folders()

    # ------------------------------------------------------------------------------------ rows
    def live_items(self) -> dict[str, LiveItem]:
        """Every live row by path, pending ones included: compare them with the files on disk."""
        fields = ["id", "path", "size", "mtime_ns", "content_hash"]
        live = {}
        for collection in self._live_collections():
            for row in collection.rows_where(LIVE, fields=fields, id_end=self.catalogue.next_id()):
                live[text_from_db(row["path"])] = LiveItem(
                    int(row["id"]), int(row["size"]), int(row["mtime_ns"]), row["content_hash"]
                )
        self._live_paths = {path: item.id for path, item in live.items()}
        return live

    def add_items(self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Add rows with codes uint8 (n, bits/8) and latents float32 (n, latent_dim); returns their
        ids, int64 (n,). A path that is live must be removed first. Set the settings first."""
        settings = self._working_settings()
        codes = check_codes(codes, nbits=settings.bits)
        latents = _check_latents(latents, dim=settings.latent_dim)
        if not len(rows) == len(codes) == len(latents):
            raise StoreError(f"got {len(rows)} rows, {len(codes)} codes and {len(latents)} latents")
        live_paths = self._live_path_ids()
        taken = [row.path for row in rows if row.path in live_paths]
        if taken or len({row.path for row in rows}) != len(rows):
            raise StoreError(f"{(taken or ['a path given twice'])[0]!r} is already in the store; remove its live row first")
        if not rows:
            return np.empty(0, dtype=np.int64)
        first = self.catalogue.reserve_ids(len(rows))
        ids = np.arange(first, first + len(rows), dtype=np.int64)
        now = utc_now()
        self.collection.insert([
            {"id": int(item_id), "code": code.tobytes(), "latent": latent, "path": text_to_db(row.path),
             "label": text_to_db(row.label), "size": int(row.size), "mtime_ns": int(row.mtime_ns),
             "content_hash": row.content_hash, "added_gen": self.gen, "removed_gen": NOT_REMOVED, "added_at": now}
            for item_id, row, code, latent in zip(ids.tolist(), rows, codes, latents)
        ])
        live_paths.update((row.path, int(item_id)) for row, item_id in zip(rows, ids))
        return ids

    def remove_items(self, ids: Iterable[int]) -> None:
        """Drop live rows from the next generation on (deleted files, or the old row of a changed one)."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return
        found = 0
        for collection in self._live_collections():
            rows = collection.rows_by_ids(wanted, where=LIVE, fields=ROW_FIELDS)
            collection.upsert([_as_row({**row, "removed_gen": self.gen}) for row in rows])
            found += len(rows)
            if self._live_paths is not None:
                for row in rows:
                    self._live_paths.pop(text_from_db(row["path"]), None)
        if found != len(wanted):
            raise StoreError(f"{len(wanted) - found} of the ids to remove are not live items")

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Record new mtimes (id, mtime_ns) of touched files whose content did not change."""
        mtimes = {int(item_id): int(mtime) for item_id, mtime in entries}
        if not mtimes:
            return
        for collection in self._live_collections():
            rows = collection.rows_by_ids(list(mtimes), where="id >= 0", fields=ROW_FIELDS)
            collection.upsert([_as_row({**row, "mtime_ns": mtimes[int(row["id"])]}) for row in rows])

    def pending(self) -> tuple[int, int]:
        """(rows added, rows removed) that commit() would publish: (0, 0) for a no-op run."""
        collections = self._live_collections()
        added = sum(c.count(f"added_gen == {self.gen}") for c in collections)
        removed = sum(c.count(f"removed_gen == {self.gen}") for c in collections)
        return added, removed

    # ------------------------------------------------------------------------ settings, models
    def set_settings(self, settings: StoreSettings) -> None:
        """The settings the next commit freezes. New vector sizes get a new collection: the rows of
        the old one must all be removed before the commit (re-encode every item)."""
        if not isinstance(settings, StoreSettings):
            raise TypeError(f"set_settings takes a StoreSettings, got {type(settings).__name__}")
        recorded = self.catalogue.uri
        if settings.backend != "milvus" or not self._names_this_store(settings.backend_uri):
            raise StoreError(
                f"the store at {self.store.root} keeps its vectors in Milvus at {self.store.uri}; its settings "
                f"need backend='milvus', backend_uri={recorded!r} (got {settings.backend!r}, {settings.backend_uri!r})"
            )
        settings = settings.with_changes(backend_uri=recorded)  # one spelling: as recorded at creation
        working = self.catalogue.working_collection()
        if working is None or (working.bits, working.latent_dim) != (settings.bits, settings.latent_dim):
            name = f"{COLLECTION_PREFIX}{uuid.uuid4().hex}"
            self._open_collection(self.catalogue.add_working_collection(name, bits=settings.bits, latent_dim=settings.latent_dim))
            self._at("collection_made")
        self.catalogue.set_settings(settings)

    # ---------------------------------------------------------------------------------- commit
    def commit(self, *, models: ModelPair) -> int:
        """Publish generation self.gen, made with `models`; returns its number."""
        settings = self._working_settings()
        self._check_models(models)
        self._check_no_rows_left_behind()
        self.collection.flush()
        self._at("flushed")
        n_items = self.collection.count(visible_at(self.gen))
        self.catalogue.commit_generation(
            gen=self.gen, n_items=n_items, collection=self.collection.name, models=models, settings=settings
        )
        self._at("generation_committed")
        self._purge(through_gen=self.gen - 1)
        self._drop_unneeded_collections()
        self._at("purged")
        committed, self.gen = self.gen, self.gen + 1
        return committed

    # ------------------------------------------------------------------------------- internals
    def _working_settings(self) -> StoreSettings:
        settings = self.catalogue.settings()
        if settings is None or self.catalogue.working_collection() is None:
            raise StoreError("set the store settings (bits, latent_dim, ...) first: set_settings(StoreSettings(...))")
        return settings

    def _open_collection(self, record: CollectionRecord) -> None:
        self.collection = self.store.make_collection(record)

    def _names_this_store(self, uri: str | None) -> bool:
        """True when uri is where this store's items live: the recorded URI, or the same Lite file
        spelt otherwise (relative, or the store's own milvus.db for a store recorded without one)."""
        if uri == self.catalogue.uri:
            return True
        return uri is not None and is_lite_uri(uri) and Path(uri).resolve() == Path(self.store.uri).resolve()

    def _live_collections(self) -> list[ItemsCollection]:
        """The collections that may hold live rows: the working one and the last generation's."""
        collections = [self.collection] if self.catalogue.working_collection() is not None else []
        last = self.catalogue.generation(self.gen - 1)
        if last is not None and (not collections or last.collection != collections[0].name):
            collections.append(self.store.collection_named(last.collection))
        return collections

    def _live_path_ids(self) -> dict[str, int]:
        if self._live_paths is None:
            self.live_items()
        return self._live_paths

    def _check_no_rows_left_behind(self) -> None:
        """Rows of the last generation's collection (other vector sizes) must all be removed."""
        for collection in self._live_collections():
            if collection.name != self.collection.name and collection.count(visible_at(self.gen)):
                raise StoreError(
                    "rows encoded with models of other code or latent sizes are still live; remove them "
                    "(re-encode every item) before committing"
                )

    def _purge(self, *, through_gen: int) -> None:
        """Delete rows no generation after through_gen can see (and rows never visible at all)."""
        for collection in self._live_collections():
            collection.delete_where(f"removed_gen <= {through_gen} or removed_gen == added_gen")

    def _drop_unneeded_collections(self) -> None:
        """Drop collections this store made that neither the working settings nor the last two
        generations use (readers of the previous generation may still be on its collection)."""
        last = self.catalogue.last_generation()
        keep = {g.collection for g in (self.catalogue.generation(last), self.catalogue.generation(last - 1)) if g}
        working = self.catalogue.working_collection()
        if working is not None:
            keep.add(working.name)
        for record in self.catalogue.collections():
            if record.name not in keep:
                collection = self.store.collection_named(record.name)
                if collection.exists():
                    collection.drop()
                self.catalogue.forget_collection(record.name)


def _as_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back from Milvus, in the form insert/upsert take."""
    code = row["code"]
    if isinstance(code, list):
        code = code[0]
    return {field: row[field] for field in ROW_FIELDS} | {"code": bytes(code)}


def _check_latents(latents: np.ndarray, *, dim: int) -> np.ndarray:
    if not isinstance(latents, np.ndarray) or latents.dtype != np.float32 or latents.ndim != 2 or latents.shape[1] != dim:
        got = f"{latents.dtype} {latents.shape}" if isinstance(latents, np.ndarray) else type(latents).__name__
        raise StoreError(f"latents must be a float32 array (n, {dim}), got {got}")
    if not np.isfinite(latents).all():
        raise StoreError("latents contain NaN or infinite values")
    return np.ascontiguousarray(latents)
