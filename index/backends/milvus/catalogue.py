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
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hashae.durable import fsync_file, fsync_folder
from hashae.errors import ConfigError
from hashae.index.backends.base import ModelPair, ModelRecord, SkippedFile, StoreError
from hashae.index.backends.milvus.names import text_from_db, text_to_db
from hashae.index.settings import FORMAT_VERSION, StoreSettings

CATALOGUE_KIND = "hashae-milvus-catalogue"
BUSY_TIMEOUT_S = 10.0
FIRST_ID = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE collections (
    name TEXT PRIMARY KEY,
    bits INTEGER NOT NULL,
    latent_dim INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('hashing', 'latent')),
    dir TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    info_json TEXT NOT NULL
);
CREATE TABLE generations (
    gen INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    collection TEXT NOT NULL,
    hashing_model INTEGER REFERENCES models (id),
    latent_model INTEGER REFERENCES models (id),
    settings_json TEXT NOT NULL
);
CREATE TABLE skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    seen_at TEXT NOT NULL
);
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


class MilvusCatalogue:
    """The SQLite catalogue of a Milvus store. Read-only unless writable=True (the one writer)."""

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
        if self.get_meta("format_version") != FORMAT_VERSION:
            version = self.get_meta("format_version")
            self.close()
            raise StoreError(
                f"the catalogue {self.path} has format version {version}, this hashae reads "
                f"{FORMAT_VERSION}; upgrade hashae or index into a new store"
            )

    @classmethod
    def create(cls, path: Path, *, uri: str | None, hamming_index: dict[str, Any]) -> MilvusCatalogue:
        """Make a new catalogue at path (under a temporary name, renamed into place) and open it
        writable. uri: the Milvus URI (None: the Milvus Lite file inside the store folder)."""
        temporary = path.with_name(f"{path.name}.new-{os.getpid()}")
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)
        connection = sqlite3.connect(str(temporary))
        try:
            connection.executescript(SCHEMA)
            birth = {"kind": CATALOGUE_KIND, "format_version": FORMAT_VERSION, "uri": uri,
                     "hamming_index": hamming_index, "next_id": FIRST_ID}
            connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in birth.items()])
            connection.commit()
        finally:
            connection.close()
        fsync_file(temporary)
        os.replace(temporary, path)
        fsync_folder(path.parent)
        return cls(path, writable=True)

    def close(self) -> None:
        self.db.close()

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
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, json.dumps(value)],
        )

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
            self.db.execute("INSERT INTO collections VALUES (?, ?, ?, ?)", [name, bits, latent_dim, _now()])
            self._set_meta("working_collection", name)
        return CollectionRecord(name, bits, latent_dim)

    def collections(self) -> list[CollectionRecord]:
        return [CollectionRecord(*row) for row in self.db.execute("SELECT name, bits, latent_dim FROM collections")]

    def forget_collection(self, name: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM collections WHERE name = ?", [name])

    # ----------------------------------------------------------------------------------- models
    def add_models(self, *, hashing: dict[str, Any], latent: dict[str, Any]) -> ModelPair:
        """Record a hashing and a latent model in one transaction (consecutive ids, hashing first)."""
        with self.transaction():
            ids = [self._insert_model(role, record) for role, record in (("hashing", hashing), ("latent", latent))]
        return ModelPair(*(self.model(i) for i in ids))

    def _insert_model(self, role: str, record: dict[str, Any]) -> int:
        if set(record) - {"dir", "kind", "info"} or not {"dir", "kind"} <= set(record):
            raise StoreError(f"a {role} model record needs dir, kind and optionally info; got {sorted(record)}")
        cursor = self.db.execute(
            "INSERT INTO models (role, dir, kind, created_at, info_json) VALUES (?, ?, ?, ?, ?)",
            (role, str(record["dir"]), str(record["kind"]), _now(), json.dumps(record.get("info") or {})),
        )
        return cursor.lastrowid

    def model(self, model_id: int) -> ModelRecord:
        row = self.db.execute(
            "SELECT id, role, dir, kind, created_at, info_json FROM models WHERE id = ?", [model_id]
        ).fetchone()
        if row is None:
            raise StoreError(f"no model with id {model_id} in the catalogue")
        *fields, info_json = row
        return ModelRecord(*fields, info=json.loads(info_json))

    def latest_models(self) -> ModelPair | None:
        """The newest pair recorded together (a hashing model and the latent model right after it)."""
        row = self.db.execute(
            "SELECT h.id, l.id FROM models h JOIN models l ON l.id = h.id + 1 AND l.role = 'latent'"
            " WHERE h.role = 'hashing' ORDER BY h.id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else ModelPair(self.model(row[0]), self.model(row[1]))

    def models_of(self, generation: Generation) -> ModelPair | None:
        if generation.hashing_model is None or generation.latent_model is None:
            return None
        return ModelPair(self.model(generation.hashing_model), self.model(generation.latent_model))

    def model_dirs(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT dir FROM models")}

    # ---------------------------------------------------------------------------------- skipped
    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        now = _now()
        rows = [(text_to_db(path), text_to_db(reason), size, mtime, now) for path, reason, size, mtime in entries]
        with self.transaction():
            self.db.executemany(
                "INSERT INTO skipped VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
                " reason = excluded.reason, size = excluded.size, mtime_ns = excluded.mtime_ns, seen_at = excluded.seen_at",
                rows,
            )

    def clear_skipped(self, paths: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM skipped WHERE path = ?", [(text_to_db(p),) for p in paths])

    def skipped(self) -> list[SkippedFile]:
        rows = self.db.execute("SELECT path, reason, size, mtime_ns, seen_at FROM skipped")
        found = [SkippedFile(text_from_db(path), text_from_db(reason), *rest) for path, reason, *rest in rows]
        return sorted(found, key=lambda skipped: skipped.path)

    # ------------------------------------------------------------------------------ generations
    def last_generation(self) -> int:
        """The newest committed generation; 0 while nothing is committed."""
        return self.db.execute("SELECT coalesce(max(gen), 0) FROM generations").fetchone()[0]

    def generation(self, gen: int) -> Generation | None:
        row = self.db.execute(
            "SELECT gen, created_at, n_items, collection, hashing_model, latent_model, settings_json"
            " FROM generations WHERE gen = ?", [gen]
        ).fetchone()
        if row is None:
            return None
        *fields, settings_json = row
        return Generation(*fields, settings=_settings(json.loads(settings_json), where=f"generation {gen} of {self.path}"))

    def count_generations(self) -> int:
        return self.db.execute("SELECT count(*) FROM generations").fetchone()[0]

    def commit_generation(
        self, *, gen: int, n_items: int, collection: str, models: ModelPair, settings: StoreSettings
    ) -> None:
        """Insert the generations row: THE commit point of generation gen (must follow the last one)."""
        with self.transaction():
            last = self.last_generation()
            if gen != last + 1:
                raise StoreError(f"cannot commit generation {gen}: the last committed one is {last}")
            self.db.execute(
                "INSERT INTO generations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gen, _now(), n_items, collection, models.hashing.id, models.latent.id,
                 json.dumps(settings.to_dict(), sort_keys=True)),
            )


def _settings(document: dict[str, Any], *, where: str) -> StoreSettings:
    try:
        return StoreSettings.from_dict(document)
    except (ConfigError, TypeError) as err:
        raise StoreError(f"the store settings in {where} are not valid ({err}); index into a new store") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
