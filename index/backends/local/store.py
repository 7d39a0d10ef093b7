"""The local store: FAISS + multi-index hashing index files over an SQLite catalogue, in one folder.

LocalStore implements hashae.index.backends.base.StoreBackend. The folder's layout is in layout.py,
the catalogue (source of truth, generations) in catalogue.py, the write transaction and its
crash-safe commit in writer.py, the read view in snapshot.py, the index files in files.py and the
write lock in lock.py.

Opening never writes: a store is read through a read-only SQLite connection, so `hashae info`,
`query` and `serve` leave the folder as they found it. The folder and its catalogue are made by the
first writer (open with create=True), and taken back when that writer leaves without having
recorded anything, so a run that fails before it has something to store leaves no empty store.

Reading (snapshot) never locks: it loads the files of the newest committed generation, checks their
digests and that they hold exactly the rows visible in it, rebuilds them in memory from SQLite when
not, and answers searches from that generation until the caller takes a new snapshot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hashae.index.backends.base import StoreError
from hashae.index.backends.common import StoreCommon, remove_empty_folder
from hashae.index.backends.local.catalogue import Catalogue, Generation
from hashae.index.backends.local.files import (
    UnusableIndexFiles,
    indexes_from_catalogue,
    load_index_files,
    remove_other_index_files,
)
from hashae.index.backends.local.hamming import HammingIndex
from hashae.index.backends.local.latent import LatentIndex
from hashae.index.backends.local.layout import StoreLayout
from hashae.index.backends.lock import write_lock
from hashae.index.backends.local.snapshot import LocalSnapshot
from hashae.index.backends.local.writer import LocalWriteTransaction

HNSW_THRESHOLD = 200_000  # latent indexes of at least this many items are built as HNSW, not flat
SNAPSHOT_ATTEMPTS = 5


class LocalStore(StoreCommon):
    """A store folder. Open it with LocalStore.open; write through writer(); read through snapshot().

    Models, skipped files and info() are answered as every backend does (StoreCommon, common.py).
    """

    def __init__(self, layout: StoreLayout, *, create: bool, hnsw_threshold: int, short_lived: bool):
        self.layout = layout
        self.root = layout.root
        self.create = create
        self.hnsw_threshold = hnsw_threshold
        self.short_lived = short_lived
        self._catalogue: Catalogue | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        hnsw_threshold: int = HNSW_THRESHOLD,
        short_lived: bool = False,
    ) -> LocalStore:
        """Open the store at path. Nothing is written: with create=True a missing store is made by
        the first writer() that records something.

        hnsw_threshold: latent indexes of at least this many items are built as HNSW, not flat.
        short_lived: a process that answers a few queries and exits: searches skip start-up costs.
        """
        layout = StoreLayout(Path(path))
        if layout.root.exists() and not layout.root.is_dir():
            raise StoreError(f"{layout.root} is not a folder; give --store a folder for the store")
        store = cls(layout, create=create, hnsw_threshold=hnsw_threshold, short_lived=short_lived)
        if not create and not layout.catalogue.is_file():
            raise StoreError(store._missing_message())
        if store.exists():
            store._catalogue = store._open_catalogue()  # an empty, foreign or too new catalogue is refused here
        return store

    # ------------------------------------------------------------------------------ what it holds
    @property
    def indexes_dir(self) -> Path:
        return self.layout.indexes_dir

    @property
    def models_dir(self) -> Path:
        """Where checkpoint folders go (record them with the writer's add_models)."""
        return self.layout.models_dir

    def exists(self) -> bool:
        """False for a store opened with create=True that no writer has made yet."""
        return self.layout.catalogue.exists()

    def backend_fields(self) -> dict[str, str | None]:
        """A local store keeps its vectors in its own folder."""
        return {"backend": "local", "backend_uri": None}

    # --------------------------------------------------------------------------- write and read
    @contextmanager
    def writer(self) -> Iterator[LocalWriteTransaction]:
        """Hold the store's write lock and yield the write transaction; StoreError when another
        writer holds it. Leaving the block without commit() keeps the pending rows: the next
        writer commits them. A store this writer made and left holding nothing is taken back."""
        if not self.create and not self.exists():
            raise StoreError(self._missing_message())
        made = self.layout.make_folders()
        take_back = False
        try:
            with write_lock(self.layout.lock, store=self.root):
                catalogue = None
                try:
                    catalogue = self._writable_catalogue()
                    yield LocalWriteTransaction(self, catalogue)
                finally:
                    if catalogue is not None:
                        take_back = catalogue.is_blank()
                        catalogue.close()
                    else:  # the catalogue could not be made: take back the folders made for it
                        take_back = bool(made) and not self.exists()
                    if take_back:
                        self._remove_blank_store()
        finally:
            if take_back:
                for folder in reversed(made):
                    remove_empty_folder(folder)

    def snapshot(self) -> LocalSnapshot:
        """A read-only view of the newest committed generation (takes no lock)."""
        if not self.exists():
            raise StoreError(self._empty_message())
        catalogue = self.catalogue
        for _ in range(SNAPSHOT_ATTEMPTS):
            generation = self._last_generation_or_fail()
            hamming, latent, rebuilt_because = self._indexes_of(generation)
            # Rows and files of G are purged only by the commit of G + 2: if that has not happened
            # yet, everything read above belonged to G. Otherwise load the newer generation.
            if catalogue.last_generation() <= generation.gen + 1:
                return LocalSnapshot(self, generation, hamming, latent, rebuilt_because=rebuilt_because)
        raise StoreError(f"the store at {self.root} kept changing while it was being read; try again")

    # ------------------------------------------------------------------------------- internals
    def _info_items(self, gen: int, generation: Generation | None) -> int:
        return self.catalogue.count_visible(gen)

    def _info_pending(self, gen: int) -> dict[str, int]:
        added, removed = self.catalogue.count_pending(gen)
        return {"added": added, "removed": removed}

    def _open_catalogue(self) -> Catalogue:
        return Catalogue(self.layout.catalogue)

    def _writable_catalogue(self) -> Catalogue:
        """The writer's own connection; the catalogue is made here (under the lock) when missing."""
        if not self.layout.catalogue.exists():
            return Catalogue.create(self.layout.catalogue)
        return Catalogue(self.layout.catalogue, writable=True)

    def _remove_blank_store(self) -> None:
        """Take back the files of a store that holds nothing (the lock is still held)."""
        self.close()
        for path in self.layout.catalogue_files():
            path.unlink(missing_ok=True)
        remove_other_index_files(self.layout.indexes_dir, keep=set())
        if self.layout.models_dir.is_dir():  # only unrecorded checkpoints can be there
            for folder in self.layout.models_dir.iterdir():
                if folder.is_dir() and not folder.is_symlink():
                    shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.layout.models_dir, self.layout.indexes_dir):
            remove_empty_folder(folder)
        self.layout.lock.unlink(missing_ok=True)

    def _indexes_of(self, generation: Generation) -> tuple[HammingIndex, LatentIndex, str | None]:
        """The generation's indexes from its files, or rebuilt from SQLite (with the reason why)."""
        try:
            hamming, latent = load_index_files(
                self.indexes_dir, generation, self.catalogue, hnsw_threshold=self.hnsw_threshold
            )
            return hamming, latent, None
        except UnusableIndexFiles as why:
            hamming, latent = indexes_from_catalogue(
                self.catalogue, generation.gen, generation.settings, hnsw_threshold=self.hnsw_threshold
            )
            return hamming, latent, str(why)
