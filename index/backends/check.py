"""A read-only integrity check of a store (`hashae check`): what is damaged, if anything.

Checked, without writing anything (the catalogue is opened through a read-only connection):
  - the catalogue: SQLite's own PRAGMA integrity_check, then every row of every table read back
    (a damaged page or a name that is not text fails there), codes and latents of the live rows of
    the right lengths for the store's settings;
  - the last committed generation's index files (local stores): present and equal to the blake2b
    digests the catalogue recorded for them (a damaged file is rebuilt from the catalogue by the
    next `hashae index`, so this one is a note, not a loss);
  - the checkpoint folders of the models in use: present, equal to the digests recorded with them,
    and loadable by the numpy encoder (every tensor's shape, dtype and values checked).
Milvus stores: the catalogue and the models (the items in Milvus are not read).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from hashae.errors import HashaeError
from hashae.index.backends.base import ModelPair, StoreError

ROWS_PER_READ = 5_000
PROBLEMS_PER_CHECK = 10  # a badly damaged file could list thousands; the first ten say enough
TABLE_COLUMNS = {
    "items": "id, path, size, mtime_ns, content_hash, label, code, latent, added_gen, removed_gen, added_at",
    "skipped": "rowid, path, reason, size, mtime_ns, seen_at",
    "models": "id, role, dir, kind, created_at, info_json",
    "generations": "*",
    "meta": "key, value",
}


@dataclass
class CheckReport:
    """What a check found: problems (each one line), and what was checked (for the summary)."""

    store: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    catalogue_damaged: bool = False  # the catalogue itself: only a rebuild helps

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"store": str(self.store), "ok": self.ok, "catalogue_damaged": self.catalogue_damaged, "problems": self.problems, "checked": self.checked}


def check_store(path: str | Path) -> CheckReport:
    """Check the store at path without writing to it; StoreError when there is no store there."""
    from hashae.index.backends.milvus.store import CATALOGUE_FILE as MILVUS_CATALOGUE
    from hashae.index.backends.milvus.store import is_milvus_store

    path = Path(path)
    report = CheckReport(path)
    if is_milvus_store(path):
        _check_milvus(path, path / MILVUS_CATALOGUE, report)
    else:
        _check_local(path, report)
    return report


def _check_local(path: Path, report: CheckReport) -> None:
    from hashae.index.backends.local.catalogue import Catalogue
    from hashae.index.backends.local.layout import StoreLayout

    layout = StoreLayout(path)
    if not layout.catalogue.is_file():
        raise StoreError(f"no hashae store at {path} — run `hashae index FOLDER` first")
    catalogue = _open(lambda: Catalogue(layout.catalogue), layout.catalogue, report)
    if catalogue is None:
        return
    with catalogue:
        connection = catalogue.connection
        if not _integrity(connection, layout.catalogue, report) or not _rows_read_back(connection, layout.catalogue, report):
            return
        gen = catalogue.last_generation()
        generation = catalogue.generation(gen) if gen else None
        if generation is not None:
            _vector_lengths(connection, gen, generation.settings, report)
            _index_files(layout.indexes_dir, generation, report)
        for pair in _pairs_in_use(catalogue.latest_models(), catalogue.models_of(generation) if generation else None):
            _models(path, pair, report)


def _check_milvus(path: Path, catalogue_file: Path, report: CheckReport) -> None:
    connection = _open(lambda: sqlite3.connect(f"{catalogue_file.absolute().as_uri()}?mode=ro", uri=True), catalogue_file, report)
    if connection is None:
        return
    try:
        if _integrity(connection, catalogue_file, report) and _rows_read_back(connection, catalogue_file, report, tables=("models", "meta")):
            from hashae.index.backends import open_store

            with open_store(path) as store:
                models = store.latest_models()
            for pair in _pairs_in_use(models, None):
                _models(path, pair, report)
    finally:
        connection.close()


def _open(opener, catalogue_file: Path, report: CheckReport):
    try:
        return opener()
    except (StoreError, sqlite3.Error) as error:
        report.problems.append(f"{catalogue_file}: cannot be opened ({' '.join(str(error).split())})")
        report.catalogue_damaged = True
        return None


def _integrity(connection: sqlite3.Connection, catalogue_file: Path, report: CheckReport) -> bool:
    """SQLite's own check of every page and index; True when it says ok."""
    try:
        rows = connection.execute(f"PRAGMA integrity_check({PROBLEMS_PER_CHECK})").fetchall()
    except sqlite3.Error as error:
        report.problems.append(f"{catalogue_file}: SQLite integrity check failed to run ({error})")
        report.catalogue_damaged = True
        return False
    found = [str(row[0]) for row in rows if str(row[0]) != "ok"]
    report.problems += [f"{catalogue_file}: {' '.join(line.split())}" for line in found]
    report.catalogue_damaged |= bool(found)
    report.checked.append("catalogue pages and indexes (SQLite integrity_check)")
    return not found


def _rows_read_back(connection: sqlite3.Connection, catalogue_file: Path, report: CheckReport, *, tables=tuple(TABLE_COLUMNS)) -> bool:
    """Every row of every table read back as Python reads it; the rows that fail are named by id."""
    before = len(report.problems)
    counted = 0
    for table in tables:
        columns = TABLE_COLUMNS[table]
        key = "rowid"
        try:
            ids = [row[0] for row in connection.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
        except sqlite3.Error as error:
            report.problems.append(f"{catalogue_file}: table {table} cannot be read ({error})")
            continue
        for start in range(0, len(ids), ROWS_PER_READ):
            chunk = ids[start : start + ROWS_PER_READ]
            try:
                connection.execute(f"SELECT {columns} FROM {table} WHERE {key} BETWEEN ? AND ?", (chunk[0], chunk[-1])).fetchall()
            except sqlite3.Error:
                _name_bad_rows(connection, catalogue_file, table, columns, chunk, report)
        counted += len(ids)
    report.checked.append(f"{counted} catalogue rows read back")
    report.catalogue_damaged |= len(report.problems) > before
    return len(report.problems) == before


def _name_bad_rows(connection, catalogue_file: Path, table: str, columns: str, ids: list[int], report: CheckReport) -> None:
    for row_id in ids:
        if len(report.problems) >= PROBLEMS_PER_CHECK:
            return
        try:
            connection.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (row_id,)).fetchall()
        except sqlite3.Error as error:
            report.problems.append(f"{catalogue_file}: {table} row {row_id} cannot be read ({' '.join(str(error).split())[:200]})")


def _vector_lengths(connection: sqlite3.Connection, gen: int, settings, report: CheckReport) -> None:
    """Codes of bits/8 bytes and latents of latent_dim float32 in every row the generation shows."""
    code_bytes, latent_bytes = settings.bits // 8, 4 * settings.latent_dim
    rows = connection.execute(
        "SELECT id, length(code), length(latent) FROM items WHERE added_gen <= :gen AND (removed_gen IS NULL"
        " OR removed_gen > :gen) AND (length(code) != :c OR length(latent) != :l) LIMIT :n",
        {"gen": gen, "c": code_bytes, "l": latent_bytes, "n": PROBLEMS_PER_CHECK},
    ).fetchall()
    report.problems += [
        f"item {item}: a code of {code} bytes and a latent of {latent} bytes; generation {gen} holds {code_bytes} and {latent_bytes}"
        for item, code, latent in rows
    ]
    report.checked.append(f"codes and latents of generation {gen}")


def _index_files(folder: Path, generation, report: CheckReport) -> None:
    from hashae.index.backends.local.files import digest

    for name, expected in ((generation.hamming_file, generation.hamming_blake2b), (generation.latent_file, generation.latent_blake2b)):
        path = folder / name
        try:
            matches = digest(path.read_bytes()) == expected
        except OSError as error:
            report.problems.append(f"{path}: cannot be read ({error.strerror or error}); `hashae index FOLDER` rebuilds it from the catalogue")
            continue
        if not matches:
            report.problems.append(f"{path}: does not match its recorded digest; `hashae index FOLDER` rebuilds it from the catalogue")
    report.checked.append(f"index files of generation {generation.gen}")


def _pairs_in_use(latest: ModelPair | None, committed: ModelPair | None) -> list[ModelPair]:
    pairs = [pair for pair in (committed, latest) if pair is not None]
    return [pair for i, pair in enumerate(pairs) if pair not in pairs[:i]]


def _models(root: Path, pair: ModelPair, report: CheckReport) -> None:
    from hashae.index.backends.base import verified_model_dir
    from hashae.inference import InferenceEncoder

    for record in (pair.hashing, pair.latent):
        try:
            InferenceEncoder.load(verified_model_dir(root, record))
        except HashaeError as error:
            report.problems.append(str(error).splitlines()[0])
        else:
            report.checked.append(f"{record.role} model {record.dir}")
