"""The local store's write transaction: changes towards the next generation, and its commit.

Rows added or removed here are pending: readers see them only once commit() publishes the
generation. commit():
  1. builds both indexes for G + 1 (the files of G updated with the changes, or rebuilt from SQLite),
  2. writes them under temporary names, fsyncs them, renames them into place and fsyncs the folder,
  3. inserts the generations row of G + 1 with the files' blake2b digests -- THE commit point,
  4. purges rows and files that neither G + 1 nor G (readers may still be on it) can see.
A kill at any step leaves G committed and intact; the next writer takes over the pending rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hashae.codes import check_codes
from hashae.index.backends.base import LiveItem, ModelPair, NewItem, StoreError
from hashae.index.backends.common import WriterCommon
from hashae.index.backends.local.catalogue import Catalogue
from hashae.index.backends.local.files import (
    Indexes,
    UnusableIndexFiles,
    add_rows,
    indexes_from_catalogue,
    load_index_files,
    publish_index_files,
    remove_other_index_files,
)
from hashae.index.backends.local.latent import check_latents
from hashae.index.backends.local.layout import StoreLayout
from hashae.index.settings import StoreSettings

if TYPE_CHECKING:
    from hashae.index.backends.local.store import LocalStore


class LocalWriteTransaction(WriterCommon):
    """Changes towards the next generation (self.gen), made under the store's write lock.

    Pending rows left by a crashed writer are picked up and committed by the next one. Skipped
    files and model records: WriterCommon (common.py).
    """

    def __init__(self, store: LocalStore, catalogue: Catalogue):
        self.store = store
        self.layout: StoreLayout = store.layout
        self.catalogue = catalogue  # the writer's own read-write connection
        self.gen = self.catalogue.last_generation() + 1
        self._remove_unneeded_index_files()  # leftovers of a writer killed before its purge
        self._remove_unrecorded_model_folders()  # checkpoints of a writer killed before recording them

    # ------------------------------------------------------------------------------------ rows
    def live_items(self) -> dict[str, LiveItem]:
        """Every live row by path, pending ones included: compare them with the files on disk."""
        return self.catalogue.live_items()

    def add_items(self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Add rows with codes uint8 (n, bits/8) and latents float32 (n, latent_dim); one transaction.

        Returns their new ids, int64 (n,). Set the settings first (set_settings).
        """
        settings = self._working_settings()
        codes = check_codes(codes, nbits=settings.bits)
        latents = check_latents(latents, dim=settings.latent_dim)
        return self.catalogue.add_items(rows, codes, latents, gen=self.gen)

    def remove_items(self, ids: Iterable[int]) -> None:
        """Drop live rows (deleted files, or the old row of a modified file); one transaction."""
        self.catalogue.remove_items(ids, gen=self.gen)

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Record new mtimes (id, mtime_ns) of touched files whose content did not change."""
        self.catalogue.update_mtimes(entries)

    def pending(self) -> tuple[int, int]:
        """(rows added, rows removed) that commit() would publish."""
        return self.catalogue.count_pending(self.gen)

    # ------------------------------------------------------------------------ settings, models
    def set_settings(self, settings: StoreSettings) -> None:
        """The settings the next commit freezes into its generation (readers never see a half change)."""
        if not isinstance(settings, StoreSettings):
            raise TypeError(f"set_settings takes a StoreSettings, got {type(settings).__name__}")
        if settings.backend != "local":
            raise StoreError(f"this store at {self.layout.root} is a local store, not {settings.backend!r}")
        self.catalogue.set_settings(settings)

    # ---------------------------------------------------------------------------------- commit
    def commit(self, *, models: ModelPair) -> int:
        """Publish generation self.gen, made with `models`, with its index files; returns it."""
        settings = self._working_settings()
        self._check_models(models)
        hamming, latent = self._indexes_for_commit(settings)
        self._at("indexes_built")
        files = publish_index_files(self.layout.indexes_dir, self.gen, hamming, latent, at=self._at)
        self.catalogue.commit_generation(
            gen=self.gen, n_items=hamming.ntotal, models=models, settings=settings, **files
        )
        self._at("generation_committed")
        self.catalogue.purge_removed(through_gen=self.gen - 1)
        self._remove_unneeded_index_files()
        self._at("purged")
        committed, self.gen = self.gen, self.gen + 1
        return committed

    # ------------------------------------------------------------------------------- internals
    def _working_settings(self) -> StoreSettings:
        settings = self.catalogue.settings()
        if settings is None:
            raise StoreError("set the store settings (bits, latent_dim, ...) first: set_settings(StoreSettings(...))")
        return settings

    def _indexes_for_commit(self, settings: StoreSettings) -> Indexes:
        """The previous generation's indexes plus this one's changes; rebuilt from SQLite if that fails."""
        expected = self.catalogue.count_visible(self.gen)
        indexes = self._previous_indexes_updated(settings)
        if indexes is None or not indexes[0].ntotal == indexes[1].ntotal == expected:
            indexes = indexes_from_catalogue(
                self.catalogue, self.gen, settings, hnsw_threshold=self.store.hnsw_threshold
            )
        return indexes

    def _previous_indexes_updated(self, settings: StoreSettings) -> Indexes | None:
        previous = self.catalogue.generation(self.gen - 1)
        if previous is None or (previous.settings.bits, previous.settings.latent_dim) != (
            settings.bits,
            settings.latent_dim,
        ):
            return None
        try:
            hamming, latent = load_index_files(
                self.layout.indexes_dir, previous, self.catalogue, hnsw_threshold=self.store.hnsw_threshold
            )
        except UnusableIndexFiles:
            return None
        removed = self.catalogue.ids_removed_in(self.gen)
        hamming.remove(removed)
        latent.remove(removed)
        add_rows(hamming, latent, *self.catalogue.items_added_in(self.gen))
        return hamming, latent

    def _remove_unneeded_index_files(self) -> None:
        """Delete index and temporary files other than those of the last two committed generations."""
        last = self.catalogue.last_generation()
        keep = set()
        for generation in (self.catalogue.generation(last), self.catalogue.generation(last - 1)):
            if generation is not None:
                keep |= {generation.hamming_file, generation.latent_file}
        remove_other_index_files(self.layout.indexes_dir, keep=keep)
