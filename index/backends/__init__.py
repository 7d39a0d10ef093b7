"""Store backends: what holds a store's items, codes and latents.

Open a store with open_store and talk to it through the Protocols of hashae.index.backends.base
(StoreBackend, WriteTransaction, ReadView); nothing outside this package imports a backend's own
modules (tests/test_backend_contract.py checks it).

    local   FAISS + multi-index hashing index files over an SQLite catalogue, in the store folder
            (hashae.index.backends.local)
"""

from __future__ import annotations

from pathlib import Path

from hashae.index.backends.base import StoreBackend

__all__ = ["open_store"]


def open_store(path: str | Path, *, create: bool = False, short_lived: bool = False) -> StoreBackend:
    """Open the store at path (a folder).

    Opening writes nothing. create=True: a missing store is made by its first writer, once that
    writer records something (a run that fails before leaves no folder behind). Without it, a
    missing store is a StoreError saying to run `hashae index FOLDER`.
    short_lived: the process answers a few queries and exits (a CLI query): searches avoid costs
    that only pay off over many queries.
    """
    # The store folder always holds the catalogue. A Milvus store (StoreSettings.backend ==
    # "milvus") will be told apart here from the settings its catalogue records; until then every
    # store is local.
    from hashae.index.backends.local.store import LocalStore

    return LocalStore.open(path, create=create, short_lived=short_lived)
