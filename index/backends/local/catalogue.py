"""The catalogue: one SQLite file (written through sqlite-utils) holding every item with its code and latent.

Codes and latents live here as BLOBs, so the index files can always be rebuilt from it.

Generations make concurrent readers and crash safety simple. Generation G is committed when its row
is in `generations`. A row of `items` is visible in G when

    added_gen <= G and (removed_gen IS NULL or removed_gen > G)

A writer working towards G + 1 inserts rows with added_gen = G + 1 and marks the rows it drops with
removed_gen = G + 1 (a modified file is its old row removed plus a new row added). Readers of G never
see those changes. Rows left pending by an interrupted writer simply become part of the next commit:
nothing committed to SQLite is ever redone or lost.

Journal: WAL, so readers never wait for the writer. synchronous=FULL: a commit is durable when it
returns, so "generation G is committed" survives a power cut, and the old index files deleted after
that commit are never needed again. It costs one WAL fsync per transaction; writers make one
transaction per batch of items, so it is noise next to encoding the batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashae.codes import check_codes
from hashae.index.backends.base import ItemInfo, LiveItem, ModelPair, NewItem, StoreError
from hashae.index.backends.catalogue_tables import (
    MODELS_TABLE,
    SKIPPED_TABLE,
    CatalogueTables,
    build_catalogue_file,
    utc_now,
)
from hashae.index.backends.local.names import name_from_db, name_to_db
from hashae.index.backends.local.stored_settings import settings_from_stored, settings_to_stored
from hashae.index.settings import FORMAT_VERSION, StoreSettings

BUSY_TIMEOUT_MS = 10_000
_MAX_PARAMS = 900  # ids per "IN (...)" query, below SQLite's oldest limit on bound parameters

VISIBLE_AT = "added_gen <= :gen AND (removed_gen IS NULL OR removed_gen > :gen)"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    label TEXT,
    code BLOB NOT NULL,
    latent BLOB NOT NULL,
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER,
    added_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_live_path ON items (path) WHERE removed_gen IS NULL;
CREATE INDEX IF NOT EXISTS items_generations ON items (added_gen, removed_gen);
CREATE INDEX IF NOT EXISTS items_removed_gen ON items (removed_gen);
{SKIPPED_TABLE}
{MODELS_TABLE}
CREATE TABLE IF NOT EXISTS generations (
    gen INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    hashing_model INTEGER REFERENCES models (id),
    latent_model INTEGER REFERENCES models (id),
    hamming_file TEXT NOT NULL,
    latent_file TEXT NOT NULL,
    hamming_blake2b TEXT NOT NULL,
    latent_blake2b TEXT NOT NULL,
    settings_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Generation:
    """A committed generation: its index files (names inside indexes/), their digests, its settings."""

    gen: int
    created_at: str
    n_items: int
    hashing_model: int | None
    latent_model: int | None
    hamming_file: str
    latent_file: str
    hamming_blake2b: str
    latent_blake2b: str
    settings: StoreSettings


# -------------------------------------------------------------------------------------- catalogue
class Catalogue(CatalogueTables):
    """The SQLite catalogue of a store: items, skipped files, models, generations and settings.

    Items and generation rows are its own; the models, skipped and meta tables' SQL is shared with
    the Milvus catalogue (catalogue_tables.py). Names that are not UTF-8 are stored as the BLOB of
    their bytes (names.py).
    """

    _text_to_db = staticmethod(name_to_db)
    _text_from_db = staticmethod(name_from_db)

    def __init__(self, path: str | Path, *, writable: bool = False):
        """Open the existing catalogue at path (Catalogue.create makes a new one).

        Read-only by default: such a connection cannot write anything, so a read-only command never
        changes the store. writable=True for the one writer. The connection may be shared by
        several threads (SQLite serialises the calls): the server answers requests on a pool.
        A file that is empty, not SQLite, not a hashae catalogue or of another format version is
        refused with a StoreError.
        """
        self.path = Path(path)
        self.writable = writable
        if not self.path.is_file():
            raise StoreError(f"no catalogue at {self.path}")
        if self.path.stat().st_size == 0:
            raise StoreError(
                f"the catalogue {self.path} is an empty file, not a hashae catalogue (damaged store?); "
                "move the store folder away and run `hashae index FOLDER` again"
            )
        try:
            self._conn = _connect(self.path, writable=writable)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # sqlite-utils for the writer only: importing it imports pandas where pandas is installed
            # (+0.14 s on every `hashae query`); readers need nothing but the sqlite3 connection
            self.db = _writer_database(self._conn) if writable else None
            self._conn.execute("PRAGMA synchronous = FULL")
            tables = {name for (name,) in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the catalogue {self.path}: {err}") from err
        if not SCHEMA_TABLES <= tables:
            self.close()
            raise StoreError(
                f"{self.path} is an SQLite file but not a hashae catalogue (it lacks the tables "
                f"{', '.join(sorted(SCHEMA_TABLES - tables))}); use another --store"
            )
        self._check_format_version()

    @classmethod
    def create(cls, path: str | Path) -> Catalogue:
        """Make a new, empty catalogue at path and open it writable.

        Built under a temporary name and renamed into place, so a crash never leaves a half-made
        catalogue (an empty catalogue.db is refused as damaged). The caller holds the write lock.
        """
        path = Path(path)

        def fill(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
            conn.execute("INSERT INTO meta (key, value) VALUES ('format_version', ?)", [json.dumps(FORMAT_VERSION)])

        build_catalogue_file(path, fill)
        return cls(path, writable=True)

    def _sql(self) -> sqlite3.Connection:
        return self._conn

    def _write_transaction(self) -> AbstractContextManager[Any]:
        # read-only: the connection's own transaction, so a write fails as SQLite refuses it ("readonly")
        return self.db.atomic() if self.db is not None else self._conn

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_blank(self) -> bool:
        """True when the catalogue holds nothing at all: no settings, items, skipped files, models
        or generations (a new store nothing was written to)."""
        tables = ("items", "skipped", "models", "generations")
        if any(self._conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in tables):
            return False
        return set(self.meta()) <= {"format_version"}

    # ------------------------------------------------------------------------------ items: write
    def add_items(
        self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray, *, gen: int
    ) -> np.ndarray:
        """Insert rows with their codes (n, B) uint8 and latents (n, d) float32, visible from gen.

        One transaction: all rows or none. Returns the new ids, int64 (n,), in the order of rows.
        A path that is already live must be removed first (a modified file is remove + add).
        """
        codes = check_codes(codes)
        latents = _check_latent_rows(latents)
        if not len(rows) == len(codes) == len(latents):
            raise StoreError(f"got {len(rows)} rows, {len(codes)} codes and {len(latents)} latents")
        if not len(rows):
            return np.empty(0, dtype=np.int64)
        try:
            with self._write_transaction():
                self._conn.executemany(_INSERT_ITEM, self._item_records(rows, codes, latents, gen, utc_now()))
                last = self._conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        except sqlite3.IntegrityError as err:
            path = self._first_taken_path(rows)
            raise StoreError(f"{path!r} is already in the catalogue; remove its live row first") from err
        # AUTOINCREMENT hands each insert max(ever used) + 1, and this transaction is the only writer:
        # the rows got consecutive ids, in order, ending at the last one inserted.
        return np.arange(last - len(rows) + 1, last + 1, dtype=np.int64)

    def _item_records(
        self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray, gen: int, now: str
    ) -> Iterator[tuple]:
        """The INSERT parameters of each row, made as executemany takes them (inside its transaction)."""
        latents = latents.astype("<f4", copy=False)
        for row, code, latent in zip(rows, codes, latents):
            yield (
                name_to_db(row.path), row.size, row.mtime_ns, row.content_hash, name_to_db(row.label),
                code.tobytes(), latent.tobytes(), gen, now,
            )

    def _first_taken_path(self, rows: Sequence[NewItem]) -> str | None:
        """The first path of rows that is live already or given twice (why a batch was refused)."""
        stored = [name_to_db(row.path) for row in rows]
        live = set()
        for start in range(0, len(stored), _MAX_PARAMS):
            chunk = stored[start : start + _MAX_PARAMS]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT path FROM items WHERE removed_gen IS NULL AND path IN ({marks})"
            live.update(path for (path,) in self._conn.execute(sql, chunk))
        seen = set()
        for row, name in zip(rows, stored):
            if name in live or name in seen:
                return row.path
            seen.add(name)
        return None

    def remove_items(self, ids: Iterable[int], *, gen: int) -> None:
        """Mark live rows removed from generation gen on (one transaction). Unknown ids are an error."""
        ids = sorted({int(i) for i in ids})
        with self._write_transaction():
            changed = self._conn.executemany(
                "UPDATE items SET removed_gen = ? WHERE id = ? AND removed_gen IS NULL",
                [(gen, i) for i in ids],
            ).rowcount
            if changed != len(ids):
                raise StoreError(f"{len(ids) - changed} of the ids to remove are not live items")

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Set mtime_ns of live rows, as (id, mtime_ns): a touched file whose content is unchanged."""
        with self._write_transaction():
            self._conn.executemany("UPDATE items SET mtime_ns = ? WHERE id = ?", [(m, i) for i, m in entries])

    def purge_removed(self, *, through_gen: int) -> int:
        """Delete rows no generation after through_gen can see; return how many went.

        Those are rows removed at or before through_gen, and rows removed in the generation that added
        them (never visible at all).
        """
        with self._write_transaction():
            cursor = self._conn.execute(
                "DELETE FROM items WHERE removed_gen <= ? OR removed_gen = added_gen", [through_gen]
            )
        return cursor.rowcount

    # ------------------------------------------------------------------------------- items: read
    def live_items(self) -> dict[str, LiveItem]:
        """Every live row (committed or pending) by path: the writer's view for the incremental diff."""
        rows = self._conn.execute(
            "SELECT path, id, size, mtime_ns, content_hash FROM items WHERE removed_gen IS NULL"
        ).fetchall()
        return {name_from_db(path): LiveItem(*rest) for path, *rest in rows}

    def items_visible(self, gen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int64 (n,), codes uint8 (n, B), latents float32 (n, d)) of the rows visible in gen, by id.

        The arrays are read-only views of the fetched bytes (copy them to modify).
        """
        return self._vectors_where(VISIBLE_AT, {"gen": gen})

    def items_added_in(self, gen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like items_visible, for the rows gen adds to gen - 1 (and does not drop again)."""
        return self._vectors_where(f"added_gen = :gen AND {VISIBLE_AT}", {"gen": gen})

    def ids_removed_in(self, gen: int) -> np.ndarray:
        """Ids int64 of the rows visible in gen - 1 that gen drops."""
        rows = self._conn.execute(
            "SELECT id FROM items WHERE removed_gen = ? AND added_gen < ? ORDER BY id", [gen, gen]
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def count_visible(self, gen: int) -> int:
        """Number of rows visible in gen."""
        return self._conn.execute(f"SELECT count(*) FROM items WHERE {VISIBLE_AT}", {"gen": gen}).fetchone()[0]

    def count_pending(self, gen: int) -> tuple[int, int]:
        """(rows added, rows removed) with generation gen: the changes its commit would publish."""
        added = self._conn.execute("SELECT count(*) FROM items WHERE added_gen = ?", [gen]).fetchone()[0]
        removed = self._conn.execute("SELECT count(*) FROM items WHERE removed_gen = ?", [gen]).fetchone()[0]
        return added, removed

    def item(self, item_id: int) -> ItemInfo | None:
        """Metadata of one row, or None when it does not exist (or was purged)."""
        return self.items([item_id]).get(int(item_id))

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of the rows with these ids, by id; ids without a row are absent."""
        ids = [int(i) for i in ids]
        found: dict[int, ItemInfo] = {}
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            marks = ", ".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({marks})", chunk):
                found[row[0]] = _item_info(row)
        return found

    def _vectors_where(self, where: str, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bulk read of (ids, codes, latents): one query, blobs joined once, no per-row numpy work."""
        sql = f"SELECT id, code, latent FROM items WHERE {where} ORDER BY id"
        rows = self._conn.execute(sql, params).fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty((0, 0), np.uint8), np.empty((0, 0), np.float32)
        ids, codes, latents = zip(*rows)
        return (
            np.array(ids, dtype=np.int64),
            _stack_blobs(codes, np.uint8, what="codes"),
            _stack_blobs(latents, np.dtype("<f4"), what="latents").astype(np.float32, copy=False),
        )

    # ------------------------------------------------------------------------------- generations
    def generation(self, gen: int) -> Generation | None:
        """The committed generation gen, or None."""
        sql = f"SELECT {_GENERATION_COLUMNS} FROM generations WHERE gen = ?"
        row = self._conn.execute(sql, [gen]).fetchone()
        if row is None:
            return None
        settings = settings_from_stored(json.loads(row[-1]), where=f"generation {gen} of {self.path}")
        if settings is None:
            raise StoreError(f"generation {gen} of {self.path} has no code length in its settings; index into a new store")
        return Generation(*row[:-1], settings=settings)

    def commit_generation(
        self,
        *,
        gen: int,
        n_items: int,
        models: ModelPair | None,
        hamming_file: str,
        latent_file: str,
        hamming_blake2b: str,
        latent_blake2b: str,
        settings: StoreSettings,
    ) -> None:
        """Insert the generations row: THE commit point of generation gen (must follow the last one)."""
        record = (
            gen,
            utc_now(),
            n_items,
            None if models is None else models.hashing.id,
            None if models is None else models.latent.id,
            hamming_file,
            latent_file,
            hamming_blake2b,
            latent_blake2b,
            json.dumps(settings_to_stored(settings), sort_keys=True),
        )
        with self._write_transaction():
            self._check_next_generation(gen)
            marks = ", ".join("?" * len(record))
            self._conn.execute(f"INSERT INTO generations ({_GENERATION_COLUMNS}) VALUES ({marks})", record)

    # ---------------------------------------------------------------------------- meta, settings
    def settings(self) -> StoreSettings | None:
        """The working settings (what the next commit freezes); None until some are set."""
        return settings_from_stored(self.meta(), where=f"the catalogue {self.path}")

    def set_settings(self, settings: StoreSettings) -> None:
        """Replace the working settings (one transaction)."""
        if settings.format_version != FORMAT_VERSION:
            raise StoreError(f"settings of format version {settings.format_version}; this store is version {FORMAT_VERSION}")
        document = settings_to_stored(settings)
        with self._write_transaction():
            self._conn.execute("DELETE FROM meta WHERE key != 'format_version'")
            for key, value in document.items():
                if key != "format_version":
                    self._set_meta(key, value)

    def meta(self) -> dict[str, Any]:
        """Every meta value, JSON-decoded: the working settings and the format version."""
        return {key: json.loads(value) for key, value in self._conn.execute("SELECT key, value FROM meta")}


SCHEMA_TABLES = {"items", "skipped", "models", "generations", "meta"}
_ITEM_COLUMNS = ", ".join(ItemInfo.__dataclass_fields__)
_INSERT_ITEM = (
    "INSERT INTO items (path, size, mtime_ns, content_hash, label, code, latent, added_gen, added_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_GENERATION_COLUMNS = (
    "gen, created_at, n_items, hashing_model, latent_model, hamming_file, latent_file,"
    " hamming_blake2b, latent_blake2b, settings_json"
)


def _writer_database(conn: sqlite3.Connection) -> Any:
    """The writer's sqlite-utils Database over conn, in WAL mode (readers never wait for it)."""
    from sqlite_utils import Database

    database = Database(conn, execute_plugins=False)
    database.enable_wal()
    return database


def _connect(path: Path, *, writable: bool) -> sqlite3.Connection:
    """A connection to an existing file: read-write, or read-only (mode=ro: no write can happen)."""
    uri = f"{path.absolute().as_uri()}?mode={'rw' if writable else 'ro'}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _item_info(row: tuple) -> ItemInfo:
    item_id, path, label, *rest = row
    return ItemInfo(item_id, name_from_db(path), name_from_db(label), *rest)


def _stack_blobs(blobs: Sequence[bytes], dtype: np.dtype, *, what: str) -> np.ndarray:
    """Equal-length blobs -> one (n, width) array, through a single join and frombuffer."""
    widths = set(map(len, blobs))
    if len(widths) != 1:
        raise StoreError(
            f"the catalogue holds {what} of different lengths {sorted(widths)} in one generation: rows "
            "encoded with another model are still live; remove them (re-encode every item) before committing"
        )
    item_size = np.dtype(dtype).itemsize
    return np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(blobs), widths.pop() // item_size)


def _check_latent_rows(latents: np.ndarray) -> np.ndarray:
    if not isinstance(latents, np.ndarray):
        raise StoreError(f"latents must be a 2-D float32 array, got {type(latents).__name__}")
    if latents.dtype != np.float32 or latents.ndim != 2:
        got = f"{latents.dtype} {latents.shape}"
        raise StoreError(f"latents must be a 2-D float32 array, got {got}")
    return latents
