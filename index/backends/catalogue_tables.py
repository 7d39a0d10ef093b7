"""The SQLite catalogue tables every store backend keeps alike: meta, models, skipped files and the
generation count, and how a new catalogue file is made.

Both catalogues (local/catalogue.py, milvus/catalogue.py) have these tables with the same columns;
CatalogueTables holds their SQL once. A backend's catalogue supplies its connection, its write
transaction and how it stores text (the two backends spell names that are not UTF-8 differently,
and their stores keep doing so).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hashae.durable import fsync_file, fsync_folder
from hashae.index.backends.base import ModelPair, ModelRecord, SkippedFile, StoreError
from hashae.index.settings import FORMAT_VERSION

MODEL_COLUMNS = "id, role, dir, kind, created_at, info_json"
# The shared tables, as both catalogues' SCHEMA spells them. SQLite keeps each CREATE statement's
# text in sqlite_master (without IF NOT EXISTS): a change here changes the files new stores get.
MODELS_TABLE = """\
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('hashing', 'latent')),
    dir TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    info_json TEXT NOT NULL
);
"""
SKIPPED_TABLE = """\
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    seen_at TEXT NOT NULL
);
"""


def utc_now() -> str:
    """Now, as the catalogues record it: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_catalogue_file(path: Path, fill: Callable[[sqlite3.Connection], None]) -> None:
    """Make the SQLite file at path: fill(connection) writes its tables under a temporary name,
    which is committed, fsynced and renamed into place, so a crash never leaves a half-made
    catalogue. The caller holds the store's write lock."""
    temporary = path.with_name(f"{path.name}.new-{os.getpid()}")
    for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)
    connection = sqlite3.connect(str(temporary))
    try:
        fill(connection)
        connection.commit()
    finally:
        connection.close()  # checkpoints and removes a WAL: the whole catalogue is in the one file
    fsync_file(temporary)
    os.replace(temporary, path)
    fsync_folder(path.parent)


class CatalogueTables:
    """The SQL of the tables both catalogues share (meta, models, skipped, generations).

    A subclass sets self.path and supplies _sql() (its sqlite3 connection), _write_transaction()
    (one write transaction, rolled back on an exception) and the text codec _text_to_db /
    _text_from_db (staticmethods) of the file names and reasons it stores.
    """

    path: Path
    _text_to_db: Callable[[str | None], Any]
    _text_from_db: Callable[[Any], str | None]

    def _sql(self) -> sqlite3.Connection:
        raise NotImplementedError

    @property
    def connection(self) -> sqlite3.Connection:
        """The catalogue's sqlite3 connection (read-only unless this is the writer's): for integrity
        checks and inspection; changes go through the catalogue's methods."""
        return self._sql()

    def _write_transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A raw meta value (JSON-decoded), or default."""
        row = self._sql().execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: Any) -> None:
        """Set one meta value (JSON-encoded); the caller holds a write transaction."""
        self._sql().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, json.dumps(value)],
        )

    def _check_format_version(self) -> None:
        """Close and raise StoreError unless the catalogue is of the format version this hashae reads."""
        version = self.get_meta("format_version")
        if version != FORMAT_VERSION:
            self.close()
            raise StoreError(
                f"the catalogue {self.path} has format version {version}, this hashae reads "
                f"{FORMAT_VERSION}; upgrade hashae or index into a new store"
            )

    def close(self) -> None:
        self._sql().close()

    # ------------------------------------------------------------------------------ generations
    def last_generation(self) -> int:
        """The newest committed generation; 0 while nothing has been committed."""
        return self._sql().execute("SELECT coalesce(max(gen), 0) FROM generations").fetchone()[0]

    def count_generations(self) -> int:
        """How many committed generations the catalogue still holds."""
        return self._sql().execute("SELECT count(*) FROM generations").fetchone()[0]

    def _check_next_generation(self, gen: int) -> None:
        """StoreError unless gen follows the last committed generation (inside the commit's transaction)."""
        last = self.last_generation()
        if gen != last + 1:
            raise StoreError(f"cannot commit generation {gen}: the last committed one is {last}")

    # ----------------------------------------------------------------------------------- models
    def add_models(self, *, hashing: dict[str, Any], latent: dict[str, Any]) -> ModelPair:
        """Record a hashing and a latent model in one transaction: a kill leaves both or neither.

        Each is {"dir": checkpoint folder relative to the store (posix), "kind": ..., "info": {...}}.
        The pair gets consecutive ids, hashing first (latest_models relies on it).
        """
        with self._write_transaction():
            ids = [self._insert_model(role, record) for role, record in (("hashing", hashing), ("latent", latent))]
        return ModelPair(*(self.model(i) for i in ids))

    def _insert_model(self, role: str, record: dict[str, Any]) -> int:
        if set(record) - {"dir", "kind", "info"} or not {"dir", "kind"} <= set(record):
            raise StoreError(f"a {role} model record needs dir, kind and optionally info; got {sorted(record)}")
        cursor = self._sql().execute(
            "INSERT INTO models (role, dir, kind, created_at, info_json) VALUES (?, ?, ?, ?, ?)",
            (role, str(record["dir"]), str(record["kind"]), utc_now(), json.dumps(record.get("info") or {})),
        )
        return cursor.lastrowid

    def model(self, model_id: int) -> ModelRecord:
        """The model row with this id; StoreError when there is none."""
        row = self._sql().execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE id = ?", [model_id]).fetchone()
        if row is None:
            raise StoreError(f"no model with id {model_id} in the catalogue")
        *fields, info_json = row
        return ModelRecord(*fields, info=json.loads(info_json))

    def latest_models(self) -> ModelPair | None:
        """The newest pair of models recorded together (committed or not); None when there is none.

        A pair is a hashing model and the latent model recorded right after it. A hashing model
        recorded alone (by a hashae older than pair records, killed between its two records) is
        never paired with an older latent model: the pair before it is returned instead.
        """
        row = self._sql().execute(
            "SELECT h.id, l.id FROM models h JOIN models l ON l.id = h.id + 1 AND l.role = 'latent'"
            " WHERE h.role = 'hashing' ORDER BY h.id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else ModelPair(self.model(row[0]), self.model(row[1]))

    def models_of(self, generation: Any) -> ModelPair | None:
        """The models a generation's vectors were made with (None when it names none)."""
        if generation.hashing_model is None or generation.latent_model is None:
            return None
        return ModelPair(self.model(generation.hashing_model), self.model(generation.latent_model))

    def count_models(self) -> int:
        """How many model rows are recorded."""
        return self._sql().execute("SELECT count(*) FROM models").fetchone()[0]

    def model_dirs(self) -> set[str]:
        """The checkpoint folders (relative to the store, posix) of every recorded model."""
        return {row[0] for row in self._sql().execute("SELECT dir FROM models")}

    # ---------------------------------------------------------------------------------- skipped
    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Record files that could not be used: (path, reason, size, mtime_ns); replaces older entries."""
        now = utc_now()
        to_db = self._text_to_db
        rows = [(to_db(path), to_db(reason), size, mtime, now) for path, reason, size, mtime in entries]
        with self._write_transaction():
            self._sql().executemany(
                "INSERT INTO skipped (path, reason, size, mtime_ns, seen_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET reason = excluded.reason, size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, seen_at = excluded.seen_at",
                rows,
            )

    def clear_skipped(self, paths: Iterable[str]) -> None:
        """Forget skipped entries (the file was fixed, indexed or deleted)."""
        with self._write_transaction():
            self._sql().executemany("DELETE FROM skipped WHERE path = ?", [(self._text_to_db(p),) for p in paths])

    def skipped(self) -> list[SkippedFile]:
        """Every skipped file, by path."""
        from_db = self._text_from_db
        rows = self._sql().execute("SELECT path, reason, size, mtime_ns, seen_at FROM skipped")
        found = [SkippedFile(from_db(path), from_db(reason), *rest) for path, reason, *rest in rows]
        return sorted(found, key=lambda skipped: skipped.path)
