"""Store backends: what holds a store's items, codes and latents.

Open a store with open_store and talk to it through the Protocols of hashae.index.backends.base
(StoreBackend, WriteTransaction, ReadView); nothing outside this package imports a backend's own
modules (tests/test_backend_contract.py checks it).

    local   FAISS + multi-index hashing index files over an SQLite catalogue, in the store folder
            (hashae.index.backends.local)
    milvus  items, codes and latents in Milvus (a Milvus Lite file or a server), settings, models,
            skipped files and generations in a small SQLite catalogue in the store folder
            (hashae.index.backends.milvus; the optional extra hashae[milvus])

What both do alike outside their vectors is written once: common.py (the store's models, skipped
files and info, the read view's generation plumbing, the writer's model records) and
catalogue_tables.py (the SQL of the catalogue tables both keep: meta, models, skipped).
"""

from __future__ import annotations

from pathlib import Path

from hashae.index.backends.base import StoreBackend, StoreError
from hashae.index.settings import BACKENDS

__all__ = ["open_store"]


def open_store(
    path: str | Path,
    *,
    create: bool = False,
    backend: str | None = None,
    backend_uri: str | None = None,
    short_lived: bool = False,
) -> StoreBackend:
    """Open the store at path (a folder).

    Opening writes nothing. create=True: a missing store is made by its first writer, once that
    writer records something (a run that fails before leaves no folder behind). Without it, a
    missing store is a StoreError saying to run `hashae index FOLDER`.
    backend, backend_uri: what a new store keeps its items in ("local", or "milvus" with a Milvus
    Lite file or server URI; None: milvus.db in the store folder). An existing store is opened as
    what it is; naming another backend for it is a StoreError.
    short_lived: the process answers a few queries and exits (a CLI query): searches avoid costs
    that only pay off over many queries.
    """
    from hashae.index.backends.milvus.store import is_milvus_store

    if backend is not None and backend not in BACKENDS:
        raise StoreError(f"unknown store backend {backend!r}; known: {', '.join(BACKENDS)}")
    if is_milvus_store(path) or (backend == "milvus" and create and not _is_local_store(path)):
        if backend not in (None, "milvus"):
            raise StoreError(f"the store at {path} keeps its items in Milvus, not {backend!r}")
        from hashae.index.backends.milvus import MilvusStore

        return MilvusStore.open(path, create=create, uri=backend_uri, short_lived=short_lived)
    if backend not in (None, "local") and _is_local_store(path):
        raise StoreError(f"the store at {path} is a local store, not a {backend} one; index into a new store")
    if backend_uri is not None:
        raise StoreError("backend_uri is for Milvus stores (backend='milvus')")
    from hashae.index.backends.local.store import LocalStore

    return LocalStore.open(path, create=create, short_lived=short_lived)


def _is_local_store(path: str | Path) -> bool:
    from hashae.index.backends.local.layout import StoreLayout

    return StoreLayout(Path(path)).catalogue.is_file()
