"""The catalogue: one SQLite file (through sqlite-utils) holding every item with its code and latent.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from hashae.codes import check_codes
from hashae.errors import HashaeError
from hashae.index.backends.base import ItemInfo, LiveItem, ModelRecord, NewItem, SkippedFile, StoreError

FORMAT_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
ROLES = ("hashing", "latent")
_MAX_PARAMS = 900  # ids per "IN (...)" query, below SQLite's oldest limit on bound parameters

VISIBLE_AT = "added_gen <= :gen AND (removed_gen IS NULL OR removed_gen > :gen)"

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('hashing', 'latent')),
    dir TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    info_json TEXT NOT NULL
);
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
    settings: dict[str, Any]



# -------------------------------------------------------------------------------------- catalogue
class Catalogue:
    """The SQLite catalogue of a store: items, skipped files, models, generations and settings."""

    def __init__(self, path: str | Path, *, check_same_thread: bool = True):
        """Open the catalogue at path, creating the file and its tables when missing.

        check_same_thread=False lets several threads share the connection (SQLite serialises the
        calls): for readers such as the server, whose requests run on a thread pool.
        """
        self.path = Path(path)
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=check_same_thread)
            self.db = Database(conn, execute_plugins=False)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = FULL")
            if not self.db["meta"].exists():
                self._create_schema()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the catalogue {self.path}: {err}") from err
        self._check_format_version()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self.db.atomic():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            if self.get_meta("format_version") is None:
                self._set_meta_in_transaction("format_version", FORMAT_VERSION)

    def _check_format_version(self) -> None:
        version = self.get_meta("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"the catalogue {self.path} has format version {version}, this hashae reads "
                f"{FORMAT_VERSION}; upgrade hashae or index into a new store"
            )

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
        now = _now()
        ids = np.empty(len(rows), dtype=np.int64)
        with self.db.atomic():
            for i, row in enumerate(rows):
                code, latent = codes[i].tobytes(), latents[i].astype("<f4").tobytes()
                ids[i] = self._insert_item(row, code, latent, gen, now)
        return ids

    def _insert_item(self, row: NewItem, code: bytes, latent: bytes, gen: int, now: str) -> int:
        try:
            cursor = self.db.conn.execute(
                "INSERT INTO items (path, size, mtime_ns, content_hash, label, code, latent, added_gen,"
                " added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.path, row.size, row.mtime_ns, row.content_hash, row.label, code, latent, gen, now),
            )
        except sqlite3.IntegrityError as err:
            raise StoreError(f"{row.path!r} is already in the catalogue; remove its live row first") from err
        return cursor.lastrowid

    def remove_items(self, ids: Iterable[int], *, gen: int) -> None:
        """Mark live rows removed from generation gen on (one transaction). Unknown ids are an error."""
        ids = sorted({int(i) for i in ids})
        with self.db.atomic():
            changed = self.db.conn.executemany(
                "UPDATE items SET removed_gen = ? WHERE id = ? AND removed_gen IS NULL",
                [(gen, i) for i in ids],
            ).rowcount
            if changed != len(ids):
                raise StoreError(f"{len(ids) - changed} of the ids to remove are not live items")

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Set mtime_ns of live rows, as (id, mtime_ns): a touched file whose content is unchanged."""
        with self.db.atomic():
            self.db.conn.executemany("UPDATE items SET mtime_ns = ? WHERE id = ?", [(m, i) for i, m in entries])

    def purge_removed(self, *, through_gen: int) -> int:
        """Delete rows no generation after through_gen can see; return how many went.

        Those are rows removed at or before through_gen, and rows removed in the generation that added
        them (never visible at all).
        """
        cursor = self.db.execute(
            "DELETE FROM items WHERE removed_gen <= ? OR removed_gen = added_gen", [through_gen]
        )
        return cursor.rowcount

    # ------------------------------------------------------------------------------- items: read
    def live_items(self) -> dict[str, LiveItem]:
        """Every live row (committed or pending) by path: the writer's view for the incremental diff."""
        rows = self.db.execute(
            "SELECT path, id, size, mtime_ns, content_hash FROM items WHERE removed_gen IS NULL"
        ).fetchall()
        return {path: LiveItem(*rest) for path, *rest in rows}

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
        rows = self.db.execute(
            "SELECT id FROM items WHERE removed_gen = ? AND added_gen < ? ORDER BY id", [gen, gen]
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def count_visible(self, gen: int) -> int:
        """Number of rows visible in gen."""
        return self.db.execute(f"SELECT count(*) FROM items WHERE {VISIBLE_AT}", {"gen": gen}).fetchone()[0]

    def count_pending(self, gen: int) -> tuple[int, int]:
        """(rows added, rows removed) with generation gen: the changes its commit would publish."""
        added = self.db.execute("SELECT count(*) FROM items WHERE added_gen = ?", [gen]).fetchone()[0]
        removed = self.db.execute("SELECT count(*) FROM items WHERE removed_gen = ?", [gen]).fetchone()[0]
        return added, removed

    def item(self, item_id: int) -> ItemInfo | None:
        """Metadata of one row, or None when it does not exist (or was purged)."""
        return self.items([item_id]).get(int(item_id))

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of the rows with these ids, by id; ids without a row are absent."""
        ids = [int(i) for i in ids]
        found: dict[int, ItemInfo] = {}
        columns = ", ".join(ItemInfo.__dataclass_fields__)
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            marks = ", ".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT {columns} FROM items WHERE id IN ({marks})", chunk):
                found[row[0]] = ItemInfo(*row)
        return found

    def _vectors_where(self, where: str, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bulk read of (ids, codes, latents): one query, blobs joined once, no per-row numpy work."""
        sql = f"SELECT id, code, latent FROM items WHERE {where} ORDER BY id"
        rows = self.db.execute(sql, params).fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty((0, 0), np.uint8), np.empty((0, 0), np.float32)
        ids, codes, latents = zip(*rows)
        return (
            np.array(ids, dtype=np.int64),
            _stack_blobs(codes, np.uint8, what="codes"),
            _stack_blobs(latents, np.dtype("<f4"), what="latents").astype(np.float32, copy=False),
        )

    # ----------------------------------------------------------------------------------- skipped
    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Record files that could not be used: (path, reason, size, mtime_ns); replaces older entries."""
        now = _now()
        records = [
            {"path": p, "reason": reason, "size": size, "mtime_ns": mtime, "seen_at": now}
            for p, reason, size, mtime in entries
        ]
        with self.db.atomic():
            self.db["skipped"].upsert_all(records, pk="path")

    def clear_skipped(self, paths: Iterable[str]) -> None:
        """Forget skipped entries (the file was fixed, indexed or deleted)."""
        with self.db.atomic():
            self.db.conn.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])

    def skipped(self) -> list[SkippedFile]:
        """Every skipped file, by path."""
        rows = self.db.execute("SELECT path, reason, size, mtime_ns, seen_at FROM skipped ORDER BY path")
        return [SkippedFile(*row) for row in rows]

    # ------------------------------------------------------------------------------------ models
    def add_model(self, *, role: str, dir: str, kind: str, info: dict[str, Any] | None = None) -> int:
        """Record a model checkpoint folder (relative to the store) in role 'hashing' or 'latent'."""
        if role not in ROLES:
            raise StoreError(f"model role must be one of {', '.join(ROLES)}, got {role!r}")
        record = {
            "role": role,
            "dir": dir,
            "kind": kind,
            "created_at": _now(),
            "info_json": json.dumps(info or {}),
        }
        with self.db.atomic():
            return self.db["models"].insert(record).last_pk

    def model(self, model_id: int) -> ModelRecord:
        """The model row with this id; StoreError when there is none."""
        row = self.db.execute(f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = ?", [model_id]).fetchone()
        if row is None:
            raise StoreError(f"no model with id {model_id} in the catalogue")
        return _model_record(row)

    def latest_model(self, role: str) -> ModelRecord | None:
        """The most recently recorded model in this role, committed or not; None when there is none."""
        row = self.db.execute(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE role = ? ORDER BY id DESC LIMIT 1", [role]
        ).fetchone()
        return None if row is None else _model_record(row)

    def count_models(self) -> int:
        return self.db.execute("SELECT count(*) FROM models").fetchone()[0]

    def model_dirs(self) -> set[str]:
        """The checkpoint folders (relative to the store, posix) of every recorded model."""
        return {row[0] for row in self.db.execute("SELECT dir FROM models")}

    # ------------------------------------------------------------------------------- generations
    def last_generation(self) -> int:
        """The newest committed generation; 0 when nothing has been committed yet."""
        return self.db.execute("SELECT coalesce(max(gen), 0) FROM generations").fetchone()[0]

    def generation(self, gen: int) -> Generation | None:
        """The committed generation gen, or None."""
        sql = f"SELECT {_GENERATION_COLUMNS} FROM generations WHERE gen = ?"
        row = self.db.execute(sql, [gen]).fetchone()
        return None if row is None else Generation(*row[:-1], settings=json.loads(row[-1]))

    def count_generations(self) -> int:
        return self.db.execute("SELECT count(*) FROM generations").fetchone()[0]

    def commit_generation(
        self,
        *,
        gen: int,
        n_items: int,
        hashing_model: int | None,
        latent_model: int | None,
        hamming_file: str,
        latent_file: str,
        hamming_blake2b: str,
        latent_blake2b: str,
        settings: dict[str, Any],
    ) -> None:
        """Insert the generations row: THE commit point of generation gen (must follow the last one)."""
        record = {
            "gen": gen,
            "created_at": _now(),
            "n_items": n_items,
            "hashing_model": hashing_model,
            "latent_model": latent_model,
            "hamming_file": hamming_file,
            "latent_file": latent_file,
            "hamming_blake2b": hamming_blake2b,
            "latent_blake2b": latent_blake2b,
            "settings_json": json.dumps(settings, sort_keys=True),
        }
        with self.db.atomic():
            last = self.last_generation()
            if gen != last + 1:
                raise StoreError(f"cannot commit generation {gen}: the last committed one is {last}")
            self.db["generations"].insert(record)

    # -------------------------------------------------------------------------------------- meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A setting (JSON-decoded), or default."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a setting (any JSON value)."""
        self.update_meta({key: value})

    def update_meta(self, values: dict[str, Any]) -> None:
        """Store several settings in one transaction."""
        with self.db.atomic():
            for key, value in values.items():
                self._set_meta_in_transaction(key, value)

    def meta(self) -> dict[str, Any]:
        """Every setting, JSON-decoded."""
        return {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM meta")}

    def _set_meta_in_transaction(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, json.dumps(value)],
        )


_MODEL_COLUMNS = "id, role, dir, kind, created_at, info_json"
_GENERATION_COLUMNS = (
    "gen, created_at, n_items, hashing_model, latent_model, hamming_file, latent_file,"
    " hamming_blake2b, latent_blake2b, settings_json"
)


def _model_record(row: tuple) -> ModelRecord:
    *fields, info_json = row
    return ModelRecord(*fields, info=json.loads(info_json))


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
