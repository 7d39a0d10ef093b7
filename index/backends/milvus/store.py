"""MilvusStore: the StoreBackend whose items live in Milvus (a Lite file or a server).

Opening never writes and never connects: the catalogue is read through a read-only SQLite
connection, and Milvus is reached on the first call that needs it (snapshot searches, the writer,
info's pending counts). The folder, its catalogue and (for an in-store Lite file) milvus.db are
made by the first writer of a store opened with create=True, and taken back when that writer leaves
without having recorded anything.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hashae.index.backends.lock import write_lock
from hashae.index.backends.base import StoreError
from hashae.index.backends.common import MODELS_DIR, StoreCommon, make_folders, remove_empty_folder
from hashae.index.backends.milvus.catalogue import CollectionRecord, Generation, MilvusCatalogue
from hashae.index.backends.milvus.collection import HAMMING_INDEXES, ItemsCollection, search_params_of
from hashae.index.backends.milvus.connection import LITE_LOG_DIR, MilvusConnection, is_lite_uri, lite_lock_file
from hashae.index.backends.milvus.snapshot import MilvusSnapshot
from hashae.index.backends.milvus.writer import MilvusWriteTransaction

CATALOGUE_FILE = "milvus-catalogue.db"
LITE_FILE = "milvus.db"  # the Milvus Lite file of a store made without a URI
LOCK_FILE = "write.lock"
DEFAULT_IVF = {"nlist": 1024, "nprobe": 16}


def is_milvus_store(path: str | Path) -> bool:
    """True when the folder at path holds a Milvus store (its catalogue)."""
    return (Path(path) / CATALOGUE_FILE).is_file()


class MilvusStore(StoreCommon):
    """A store folder whose items live in Milvus. Open it with MilvusStore.open.

    Models, skipped files and info() are answered as every backend does (StoreCommon, common.py).
    """

    STORE_NAME = "hashae Milvus store"

    def __init__(self, root: Path, *, create: bool, uri: str | None, token: str | None, hamming_index: dict[str, Any]):
        self.root = root
        self.create = create
        self._uri = uri  # as asked (None: the store's own Lite file); the catalogue's wins once it exists
        self._token = token
        self._hamming_index = hamming_index
        self._catalogue: MilvusCatalogue | None = None
        self._connection: MilvusConnection | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        uri: str | None = None,
        token: str | None = None,
        hamming_index: str = "BIN_FLAT",
        nlist: int = DEFAULT_IVF["nlist"],
        nprobe: int = DEFAULT_IVF["nprobe"],
        short_lived: bool = False,
    ) -> MilvusStore:
        """Open the Milvus store at path (a folder). Nothing is written.

        uri: where a new store keeps its items: a Milvus Lite file (*.db) or a Milvus server
        (http://HOST:19530); None: milvus.db inside the store folder. An existing store uses the URI
        it was made with (a different one is a StoreError). token: the server's token (default: the
        HASHAE_MILVUS_TOKEN environment variable); never stored. hamming_index: BIN_FLAT (exact) or
        BIN_IVF_FLAT (approximate, servers only; nlist lists, nprobe probed per search), for a new
        store. short_lived is accepted for open_store's sake (nothing to save here).
        """
        del short_lived
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is not a folder; give --store a folder for the store")
        if not create and not is_milvus_store(root):
            raise StoreError(f"no {cls.STORE_NAME} at {root} — run `hashae index FOLDER` first")
        if hamming_index not in HAMMING_INDEXES:
            raise StoreError(f"unknown Hamming index {hamming_index!r}; known: {', '.join(HAMMING_INDEXES)}")
        if uri is not None and is_lite_uri(uri):
            uri = str(Path(uri).absolute())
            if hamming_index != "BIN_FLAT":
                raise StoreError("Milvus Lite supports only the BIN_FLAT Hamming index; use a Milvus server for BIN_IVF_FLAT")
        index = {"type": hamming_index, **({"nlist": nlist, "nprobe": nprobe} if hamming_index == "BIN_IVF_FLAT" else {})}
        store = cls(root, create=create, uri=uri, token=token, hamming_index=index)
        if is_milvus_store(root):
            recorded = store.catalogue.uri
            if uri is not None and uri != recorded:
                store.close()
                raise StoreError(f"the store at {root} keeps its items at {recorded or root / LITE_FILE}, not {uri}")
        return store

    def close(self) -> None:
        """Close the catalogue's connection and Milvus's (the next use opens them again)."""
        super().close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ------------------------------------------------------------------------------ what it holds
    def exists(self) -> bool:
        return is_milvus_store(self.root)

    @property
    def uri(self) -> str:
        """Where the items live: the Lite file or the server URI."""
        recorded = self.catalogue.uri if self.exists() else self._uri
        return recorded if recorded is not None else str((self.root / LITE_FILE).absolute())

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    def backend_fields(self) -> dict[str, str | None]:
        """A Milvus store's vectors live at its URI (a Lite file or a server)."""
        return {"backend": "milvus", "backend_uri": self.catalogue.uri if self.exists() else self._uri}

    # ------------------------------------------------------------------------------- Milvus
    @property
    def client(self) -> Any:
        """The MilvusClient, connected on first use."""
        if self._connection is None:
            self._connection = MilvusConnection(self.uri, token=self._token)
        return self._connection.client

    def make_collection(self, record: CollectionRecord) -> ItemsCollection:
        """The collection of record, made in Milvus when missing."""
        hamming_index = self.catalogue.hamming_index
        return ItemsCollection.create(
            self.client, record.name, bits=record.bits, latent_dim=record.latent_dim, hamming_index=hamming_index
        )

    def collection_named(self, name: str) -> ItemsCollection:
        return ItemsCollection(self.client, name, search_params=search_params_of(self.catalogue.hamming_index))

    # --------------------------------------------------------------------------- write and read
    @contextmanager
    def writer(self) -> Iterator[MilvusWriteTransaction]:
        """Hold the store's write lock and yield the write transaction; StoreError when another
        writer holds it. Leaving without commit() keeps the pending rows: the next writer commits
        them. A store this writer made and left holding nothing is taken back."""
        if not self.create and not self.exists():
            raise StoreError(self._missing_message())
        made = make_folders(self.root, self.models_dir)
        blank = False
        try:
            with write_lock(self.root / LOCK_FILE, store=self.root):
                catalogue = self._writable_catalogue()
                try:
                    yield MilvusWriteTransaction(self, catalogue)
                finally:
                    blank = catalogue.is_blank()
                    made_collections = [record.name for record in catalogue.collections()] if blank else []
                    catalogue.close()
                    if blank:
                        self._remove_blank_store(made_collections)
        finally:
            if blank:
                for folder in reversed(made):
                    remove_empty_folder(folder)

    def snapshot(self) -> MilvusSnapshot:
        """A read-only view of the newest committed generation (takes no lock)."""
        generation = self._last_generation_or_fail()
        return MilvusSnapshot(self, generation, self.collection_named(generation.collection))

    def _info_items(self, gen: int, generation: Generation | None) -> int:
        return generation.n_items if generation else 0

    def _info_backend(self, generation: Generation | None) -> dict[str, Any]:
        """Where the items live."""
        return {
            "backend": {
                "name": "milvus",
                "uri": self.uri,
                "collection": generation.collection if generation else None,
                "hamming_index": self.catalogue.hamming_index["type"],
            },
        }

    # ------------------------------------------------------------------------------- internals
    def _info_pending(self, gen: int) -> dict[str, int]:
        working = self.catalogue.working_collection()
        if working is None:
            return {"added": 0, "removed": 0}
        collection = self.collection_named(working.name)
        if not collection.exists():
            return {"added": 0, "removed": 0}
        return {"added": collection.count(f"added_gen == {gen}"), "removed": collection.count(f"removed_gen == {gen}")}

    def _open_catalogue(self) -> MilvusCatalogue:
        return MilvusCatalogue(self.root / CATALOGUE_FILE)

    def _writable_catalogue(self) -> MilvusCatalogue:
        """The writer's own connection; the catalogue is made here (under the lock) when missing."""
        path = self.root / CATALOGUE_FILE
        if not path.exists():
            return MilvusCatalogue.create(path, uri=self._uri, hamming_index=self._hamming_index)
        return MilvusCatalogue(path, writable=True)

    def _remove_blank_store(self, collections: list[str]) -> None:
        """Take back the files (and collections) of a store that holds nothing (the lock is still held)."""
        uri = self.uri
        for name in collections:  # made by a set_settings that failed before recording the settings
            try:
                collection = self.collection_named(name)
                if collection.exists():
                    collection.drop()
            except StoreError:
                pass  # the server is unreachable: an empty collection stays behind
        self.close()
        for suffix in ("", "-wal", "-shm"):
            (self.root / f"{CATALOGUE_FILE}{suffix}").unlink(missing_ok=True)
        if uri == str((self.root / LITE_FILE).absolute()):
            (self.root / LITE_FILE).unlink(missing_ok=True)
            (self.root / lite_lock_file(self.root / LITE_FILE).name).unlink(missing_ok=True)
            shutil.rmtree(self.root / LITE_LOG_DIR, ignore_errors=True)
        remove_empty_folder(self.models_dir)
        (self.root / LOCK_FILE).unlink(missing_ok=True)
