"""The local catalogue of a Milvus store: one small SQLite file in the store folder.

Milvus holds the items (vectors and metadata); this file holds what Milvus cannot make atomic:

    meta         format version, the Milvus URI, the Hamming index type, the next free item id,
                 the working collection, the working settings (one JSON document)
    collections  every Milvus collection this store made (dropped once no generation needs it)
    generations  one row per committed generation: its collection, item count, models, settings.
                 Inserting it is THE commit point of the generation.
    models       checkpoint folders of the store's models (pairs: hashing, then latent)
    skipped      files the reader could not use, with the reason

Journal WAL, synchronous=FULL: a commit is durable when it returns. Readers open it read-only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashae.errors import ConfigError
from hashae.index.backends.base import ModelPair, StoreError
from hashae.index.backends.catalogue_tables import (
    MODELS_TABLE,
    SKIPPED_TABLE,
    CatalogueTables,
    build_catalogue_file,
    utc_now,
)
from hashae.index.backends.milvus.names import text_from_db, text_to_db
from hashae.index.settings import FORMAT_VERSION, StoreSettings

CATALOGUE_KIND = "hashae-milvus-catalogue"
BUSY_TIMEOUT_S = 10.0
FIRST_ID = 1

SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE collections (
    name TEXT PRIMARY KEY,
    bits INTEGER NOT NULL,
    latent_dim INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
{MODELS_TABLE}
CREATE TABLE generations (
    gen INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    collection TEXT NOT NULL,
    hashing_model INTEGER REFERENCES models (id),
    latent_model INTEGER REFERENCES models (id),
    settings_json TEXT NOT NULL
);
{SKIPPED_TABLE}
"""
TABLES = {"meta", "collections", "models", "generations", "skipped"}
# meta keys every catalogue has from its creation on (a catalogue holding only these is blank)
BIRTH_KEYS = {"kind", "format_version", "uri", "hamming_index", "next_id"}


@dataclass(frozen=True)
class Generation:
    """A committed generation: the collection its items are in, how many it shows, its settings."""

    gen: int
    created_at: str
    n_items: int
    collection: str
    hashing_model: int | None
    latent_model: int | None
    settings: StoreSettings


@dataclass(frozen=True)
class CollectionRecord:
    """A Milvus collection this store made, with the vector sizes it was made for."""

    name: str
    bits: int
    latent_dim: int


class MilvusCatalogue(CatalogueTables):
    """The SQLite catalogue of a Milvus store. Read-only unless writable=True (the one writer).

    Its models, skipped and meta tables' SQL is shared with the local catalogue
    (catalogue_tables.py); text is stored as names.py spells it for Milvus.
    """

    _text_to_db = staticmethod(text_to_db)
    _text_from_db = staticmethod(text_from_db)

    def __init__(self, path: Path, *, writable: bool = False):
        self.path = Path(path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise StoreError(f"no Milvus store catalogue at {self.path} (damaged store?); index into a new store")
        mode = "rw" if writable else "ro"
        try:
            self.db = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_S,
                check_same_thread=False, isolation_level=None,
            )
            if writable:
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the catalogue {self.path}: {err}") from None
        if not TABLES <= tables or self.get_meta("kind") != CATALOGUE_KIND:
            self.close()
            raise StoreError(f"{self.path} is not the catalogue of a hashae Milvus store; use another --store")
        self._check_format_version()

    @classmethod
    def create(cls, path: Path, *, uri: str | None, hamming_index: dict[str, Any]) -> MilvusCatalogue:
        """Make a new catalogue at path (under a temporary name, renamed into place) and open it
        writable. uri: the Milvus URI (None: the Milvus Lite file inside the store folder)."""
        birth = {"kind": CATALOGUE_KIND, "format_version": FORMAT_VERSION, "uri": uri,
                 "hamming_index": hamming_index, "next_id": FIRST_ID}

        def fill(connection: sqlite3.Connection) -> None:
            connection.executescript(SCHEMA)
            connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in birth.items()])

        build_catalogue_file(path, fill)
        return cls(path, writable=True)

    def _sql(self) -> sqlite3.Connection:
        return self.db

    def _write_transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.transaction()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on an exception)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def is_blank(self) -> bool:
        """True when nothing was recorded: no settings, models, skipped files or generations."""
        if any(self.db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("models", "generations", "skipped")):
            return False
        return self.get_meta("settings") is None

    # ------------------------------------------------------------------------------------- meta
    @property
    def uri(self) -> str | None:
        """The Milvus URI recorded at creation (None: the Lite file inside the store folder)."""
        return self.get_meta("uri")

    @property
    def hamming_index(self) -> dict[str, Any]:
        return self.get_meta("hamming_index")

    def settings(self) -> StoreSettings | None:
        """The working settings (what the next commit freezes); None until some are set."""
        document = self.get_meta("settings")
        return None if document is None else _settings(document, where=f"the catalogue {self.path}")

    def set_settings(self, settings: StoreSettings) -> None:
        with self.transaction():
            self._set_meta("settings", settings.to_dict())

    def reserve_ids(self, n: int) -> int:
        """Reserve n new item ids, durably, before they are written to Milvus; returns the first.

        Ids are never handed out twice, even when a writer is killed after reserving them (Milvus
        would keep two rows with one primary key)."""
        with self.transaction():
            first = self.get_meta("next_id")
            self._set_meta("next_id", first + n)
        return first

    def next_id(self) -> int:
        """One past the largest id ever reserved: every item id is below it."""
        return self.get_meta("next_id")

    # ------------------------------------------------------------------------------ collections
    def working_collection(self) -> CollectionRecord | None:
        """The collection new items go to (None until the settings are first set)."""
        name = self.get_meta("working_collection")
        return None if name is None else self.collection(name)

    def collection(self, name: str) -> CollectionRecord:
        row = self.db.execute("SELECT name, bits, latent_dim FROM collections WHERE name = ?", [name]).fetchone()
        if row is None:
            raise StoreError(f"the catalogue {self.path} does not know the Milvus collection {name}")
        return CollectionRecord(*row)

    def add_working_collection(self, name: str, *, bits: int, latent_dim: int) -> CollectionRecord:
        """Record a new collection as the working one, before it is made in Milvus."""
        with self.transaction():
            self.db.execute("INSERT INTO collections VALUES (?, ?, ?, ?)", [name, bits, latent_dim, utc_now()])
            self._set_meta("working_collection", name)
        return CollectionRecord(name, bits, latent_dim)

    def collections(self) -> list[CollectionRecord]:
        return [CollectionRecord(*row) for row in self.db.execute("SELECT name, bits, latent_dim FROM collections")]

    def forget_collection(self, name: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM collections WHERE name = ?", [name])

    # ------------------------------------------------------------------------------ generations
    def generation(self, gen: int) -> Generation | None:
        row = self.db.execute(
            "SELECT gen, created_at, n_items, collection, hashing_model, latent_model, settings_json"
            " FROM generations WHERE gen = ?", [gen]
        ).fetchone()
        if row is None:
            return None
        *fields, settings_json = row
        return Generation(*fields, settings=_settings(json.loads(settings_json), where=f"generation {gen} of {self.path}"))

    def commit_generation(
        self, *, gen: int, n_items: int, collection: str, models: ModelPair, settings: StoreSettings
    ) -> None:
        """Insert the generations row: THE commit point of generation gen (must follow the last one)."""
        with self.transaction():
            self._check_next_generation(gen)
            self.db.execute(
                "INSERT INTO generations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gen, utc_now(), n_items, collection, models.hashing.id, models.latent.id,
                 json.dumps(settings.to_dict(), sort_keys=True)),
            )


def _settings(document: dict[str, Any], *, where: str) -> StoreSettings:
    try:
        return StoreSettings.from_dict(document)
    except (ConfigError, TypeError) as err:
        raise StoreError(f"the store settings in {where} are not valid ({err}); index into a new store") from None
