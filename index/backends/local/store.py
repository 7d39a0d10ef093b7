"""The store folder (default ./.hashae): catalogue, model checkpoints and index files, by generation.

    .hashae/
      catalogue.db            SQLite (WAL): items with codes and latents, skipped files, models,
                              generations, settings -- the source of truth (see index.catalogue)
      write.lock              flock'ed by the one writer at a time; holds its pid
      models/                 checkpoint folders (written by the trainer; recorded in `models`)
      indexes/hamming-G.bin   HammingIndex of generation G
      indexes/latent-G.faiss  LatentIndex of generation G

Writing (Store.writer) adds and removes rows towards generation G + 1, then commit():
  1. builds both indexes for G + 1 (the files of G updated with the changes, or rebuilt from SQLite),
  2. writes them under temporary names, fsyncs them, renames them into place and fsyncs the folder,
  3. inserts the generations row of G + 1 with the files' blake2b digests -- THE commit point,
  4. purges rows and files that neither G + 1 nor G (readers may still be on it) can see.
A kill at any step leaves G committed and intact; the next writer takes over the pending rows.

Reading (Store.snapshot) never locks: it loads the files of the newest committed generation, checks
their digests and that they hold exactly the rows visible in it, rebuilds them in memory from SQLite
when not, and answers searches from that generation until the caller takes a new snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hashae.codes import check_codes, check_nbits
from hashae.durable import fsync_folder, write_synced
from hashae.errors import HashaeError
from hashae.index.backends.local.catalogue import (
    Catalogue,
    Generation,
    ItemInfo,
    LiveItem,
    ModelRecord,
    NewItem,
    SkippedFile,
    StoreError,
)
from hashae.index.backends.local.hamming import HammingIndex, IndexFileError
from hashae.index.backends.local.latent import LatentError, LatentIndex, check_latents

__all__ = [
    "DEFAULT_STORE",
    "QUERY_MODES",
    "Generation",
    "Hit",
    "ItemInfo",
    "LiveItem",
    "ModelRecord",
    "NewItem",
    "QueryError",
    "SkippedFile",
    "Snapshot",
    "Store",
    "StoreError",
    "Writer",
]

DEFAULT_STORE = Path(".hashae")
CATALOGUE_FILE = "catalogue.db"
LOCK_FILE = "write.lock"
MODELS_DIR = "models"
INDEXES_DIR = "indexes"
HAMMING_FILE = "hamming-{gen}.bin"
LATENT_FILE = "latent-{gen}.faiss"
TEMP_SUFFIX = ".tmp"
INDEX_FILE_NAME = re.compile(r"^(hamming-\d+\.bin|latent-\d+\.faiss)(\.tmp)?$")
INDEX_SETTINGS = ("bits", "latent_dim")  # settings every commit needs; they shape the index files
RESERVED_SETTINGS = ("format_version",)
QUERY_MODES = ("hamming", "latent", "hybrid")
SNAPSHOT_ATTEMPTS = 5


@dataclass(frozen=True)
class Hit:
    """One search result.

    distance: Hamming distance in bits (int) for hamming searches; squared L2 distance between VAE
    means (float) for latent and hybrid searches. path and label are filled by
    Snapshot.with_metadata (None before).
    """

    id: int
    distance: int | float
    path: str | None = None
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Results = list[list[Hit]]  # one list per query, best first, sorted by (distance, id), no padding


class QueryError(HashaeError):
    """A search was asked with bad arguments: k, shortlist, mode, or unmatched query arrays."""


class UnusableIndexFiles(Exception):
    """Internal: a generation's index files are missing, corrupt or do not match the catalogue."""


# ------------------------------------------------------------------------------------------ store
class Store:
    """A store folder. Open it with Store.open; write through writer(); read through snapshot()."""

    def __init__(self, root: Path, catalogue: Catalogue, *, hnsw_threshold: int):
        self.root = root
        self.catalogue = catalogue
        self.hnsw_threshold = hnsw_threshold

    @classmethod
    def open(
        cls,
        path: str | Path = DEFAULT_STORE,
        *,
        create: bool = False,
        hnsw_threshold: int = 200_000,
        check_same_thread: bool = True,
    ) -> Store:
        """Open the store at path; with create=True make it (folders and catalogue) when missing.

        hnsw_threshold: latent indexes of at least this many items are built as HNSW, not flat.
        check_same_thread=False: the catalogue connection may be used from several threads (readers).
        """
        root = Path(path)
        if create:
            for folder in (root, root / MODELS_DIR, root / INDEXES_DIR):
                folder.mkdir(parents=True, exist_ok=True)
        elif not (root / CATALOGUE_FILE).is_file():
            raise StoreError(f"no hashae store at {root} — run `hashae index FOLDER` first")
        catalogue = Catalogue(root / CATALOGUE_FILE, check_same_thread=check_same_thread)
        return cls(root, catalogue, hnsw_threshold=hnsw_threshold)

    def close(self) -> None:
        self.catalogue.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def indexes_dir(self) -> Path:
        return self.root / INDEXES_DIR

    @property
    def models_dir(self) -> Path:
        """Where checkpoint folders go (record them with Writer.add_model)."""
        return self.root / MODELS_DIR

    def model_dir(self, model: ModelRecord) -> Path:
        """The checkpoint folder of a model row."""
        return self.root / model.dir

    def settings(self) -> dict[str, Any]:
        """The working settings (what the next commit will use); a snapshot has its generation's."""
        return self.catalogue.meta()

    @contextmanager
    def writer(self) -> Iterator[Writer]:
        """Hold the store's write lock and yield a Writer; StoreError when another writer holds it.

        Leaving the block without commit() keeps the pending rows: the next writer commits them.
        """
        with _write_lock(self.root / LOCK_FILE, store=self.root):
            yield Writer(self)

    def snapshot(self) -> Snapshot:
        """A read-only view of the newest committed generation (takes no lock)."""
        for _ in range(SNAPSHOT_ATTEMPTS):
            generation = self._last_generation_or_fail()
            hamming, latent, rebuilt_because = self._indexes_of(generation)
            # Rows and files of G are purged only by the commit of G + 2: if that has not happened
            # yet, everything read above belonged to G. Otherwise load the newer generation.
            if self.catalogue.last_generation() <= generation.gen + 1:
                return Snapshot(self, generation, hamming, latent, rebuilt_because=rebuilt_because)
        raise StoreError(f"the store at {self.root} kept changing while it was being read; try again")

    def info(self) -> dict[str, Any]:
        """What `hashae info --json` prints: counts, skipped files with reasons, settings, models."""
        catalogue = self.catalogue
        gen = catalogue.last_generation()
        generation = catalogue.generation(gen)
        settings = generation.settings if generation else catalogue.meta()
        skipped = catalogue.skipped()
        added, removed = catalogue.count_pending(gen + 1)
        return {
            "store": str(self.root),
            "generation": gen,
            "committed_at": generation.created_at if generation else None,
            "items": catalogue.count_visible(gen),
            "pending": {"added": added, "removed": removed},
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
            "skipped_by_reason": dict(Counter(s.reason for s in skipped)),
            "bits": settings.get("bits"),
            "latent_dim": settings.get("latent_dim"),
            "settings": settings,
            "generations": catalogue.count_generations(),
            "models": self._models_info(generation),
        }

    # ------------------------------------------------------------------------------- internals
    def _last_generation_or_fail(self) -> Generation:
        generation = self.catalogue.generation(self.catalogue.last_generation())
        if generation is None:
            raise StoreError(
                f"the store at {self.root} has no committed index yet — run `hashae index FOLDER`"
            )
        return generation

    def _models_info(self, generation: Generation | None) -> dict[str, Any]:
        if generation is None:
            return {"hashing": None, "latent": None}
        ids = {"hashing": generation.hashing_model, "latent": generation.latent_model}
        return {role: None if i is None else asdict(self.catalogue.model(i)) for role, i in ids.items()}

    def _indexes_of(self, generation: Generation) -> tuple[HammingIndex, LatentIndex, str | None]:
        """The generation's indexes from its files, or rebuilt from SQLite (with the reason why)."""
        try:
            return (*_load_index_files(self, generation), None)
        except UnusableIndexFiles as why:
            return (*_indexes_from_catalogue(self, generation.gen, generation.settings), str(why))


# ----------------------------------------------------------------------------------------- writer
class Writer:
    """Changes towards the next generation (self.gen), made under the store's write lock.

    Rows added or removed here are pending: readers see them only once commit() publishes the
    generation. Pending rows left by a crashed writer are picked up and committed by the next one.
    """

    def __init__(self, store: Store):
        self.store = store
        self.catalogue = store.catalogue
        self.gen = self.catalogue.last_generation() + 1
        self._remove_unneeded_index_files()  # leftovers of a writer killed before its purge
        self._remove_unrecorded_model_folders()  # checkpoints of a writer killed before recording them

    # ------------------------------------------------------------------------------------ rows
    def live_items(self) -> dict[str, LiveItem]:
        """Every live row by path, pending ones included: compare them with the files on disk."""
        return self.catalogue.live_items()

    def add_items(self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Add rows with codes uint8 (n, bits/8) and latents float32 (n, latent_dim); one transaction.

        Returns their new ids, int64 (n,). Set the settings bits and latent_dim first.
        """
        settings = self._index_settings()
        codes = check_codes(codes, nbits=settings["bits"])
        latents = check_latents(latents, dim=settings["latent_dim"])
        return self.catalogue.add_items(rows, codes, latents, gen=self.gen)

    def remove_items(self, ids: Iterable[int]) -> None:
        """Drop live rows (deleted files, or the old row of a modified file); one transaction."""
        self.catalogue.remove_items(ids, gen=self.gen)

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Record new mtimes (id, mtime_ns) of touched files whose content did not change."""
        self.catalogue.update_mtimes(entries)

    def pending(self) -> tuple[int, int]:
        """(rows added, rows removed) that commit() would publish."""
        return self.catalogue.count_pending(self.gen)

    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Record unusable files as (path, reason, size, mtime_ns)."""
        self.catalogue.record_skipped(entries)

    def clear_skipped(self, paths: Iterable[str]) -> None:
        """Forget skipped files that were fixed, indexed or deleted."""
        self.catalogue.clear_skipped(paths)

    # ------------------------------------------------------------------------ settings, models
    def set_settings(self, **values: Any) -> None:
        """Set working settings (bits, latent_dim, image_size, channels, source_root, ...; JSON values).

        Each commit freezes a copy of them into its generation, so readers never see a half change.
        """
        for key in RESERVED_SETTINGS:
            if key in values:
                raise StoreError(f"the setting {key!r} is managed by the store")
        if "bits" in values:
            check_nbits(values["bits"])
        latent_dim = values.get("latent_dim", 1)
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim <= 0:
            raise StoreError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.catalogue.update_meta(values)

    def add_model(self, *, role: str, dir: str | Path, kind: str, info: dict[str, Any] | None = None) -> int:
        """Record a checkpoint folder inside the store (absolute, or relative to it); returns its id."""
        folder = Path(dir)
        if folder.is_absolute():
            try:
                folder = folder.relative_to(self.store.root.absolute())
            except ValueError:
                raise StoreError(f"model folder {dir} is outside the store {self.store.root}") from None
        return self.catalogue.add_model(role=role, dir=folder.as_posix(), kind=kind, info=info)

    # ---------------------------------------------------------------------------------- commit
    def commit(self, *, hashing_model: int | None, latent_model: int | None) -> int:
        """Publish generation self.gen with its index files; returns it (see the module docstring)."""
        settings = self._index_settings()
        self._check_model(hashing_model, role="hashing")
        self._check_model(latent_model, role="latent")
        hamming, latent = self._indexes_for_commit(settings)
        self._at("indexes_built")
        files = self._publish_index_files(hamming, latent)
        self.catalogue.commit_generation(
            gen=self.gen,
            n_items=hamming.ntotal,
            hashing_model=hashing_model,
            latent_model=latent_model,
            settings=settings,
            **files,
        )
        self._at("generation_committed")
        self.catalogue.purge_removed(through_gen=self.gen - 1)
        self._remove_unneeded_index_files()
        self._at("purged")
        committed, self.gen = self.gen, self.gen + 1
        return committed

    def _at(self, step: str) -> None:
        """A named point of commit(); does nothing. Crash tests override it to kill the process here."""

    def _index_settings(self) -> dict[str, Any]:
        settings = self.catalogue.meta()
        missing = [key for key in INDEX_SETTINGS if key not in settings]
        if missing:
            raise StoreError(f"set the store settings {', '.join(missing)} first (Writer.set_settings)")
        return settings

    def _check_model(self, model_id: int | None, *, role: str) -> None:
        if model_id is not None and self.catalogue.model(model_id).role != role:
            raise StoreError(f"model {model_id} is not a {role} model")

    def _indexes_for_commit(self, settings: dict[str, Any]) -> tuple[HammingIndex, LatentIndex]:
        """The previous generation's indexes plus this one's changes; rebuilt from SQLite if that fails."""
        expected = self.catalogue.count_visible(self.gen)
        indexes = self._previous_indexes_updated(settings)
        if indexes is None or not indexes[0].ntotal == indexes[1].ntotal == expected:
            indexes = _indexes_from_catalogue(self.store, self.gen, settings)
        return indexes

    def _previous_indexes_updated(self, settings: dict[str, Any]) -> tuple[HammingIndex, LatentIndex] | None:
        previous = self.catalogue.generation(self.gen - 1)
        if previous is None or any(previous.settings.get(k) != settings[k] for k in INDEX_SETTINGS):
            return None
        try:
            hamming, latent = _load_index_files(self.store, previous)
        except UnusableIndexFiles:
            return None
        removed = self.catalogue.ids_removed_in(self.gen)
        hamming.remove(removed)
        latent.remove(removed)
        _add_rows(hamming, latent, *self.catalogue.items_added_in(self.gen))
        return hamming, latent

    def _publish_index_files(self, hamming: HammingIndex, latent: LatentIndex) -> dict[str, str]:
        """Write both files under temporary names, fsync, rename into place, fsync the folder."""
        folder = self.store.indexes_dir
        folder.mkdir(parents=True, exist_ok=True)
        contents = {
            HAMMING_FILE.format(gen=self.gen): hamming.to_bytes(),
            LATENT_FILE.format(gen=self.gen): latent.to_bytes(),
        }
        for name, data in contents.items():
            write_synced(folder / (name + TEMP_SUFFIX), data)
        self._at("temp_files_written")
        for name in contents:
            os.replace(folder / (name + TEMP_SUFFIX), folder / name)
        fsync_folder(folder)
        self._at("files_renamed")
        (hamming_file, hamming_bytes), (latent_file, latent_bytes) = contents.items()
        return {
            "hamming_file": hamming_file,
            "latent_file": latent_file,
            "hamming_blake2b": _digest(hamming_bytes),
            "latent_blake2b": _digest(latent_bytes),
        }

    def _remove_unneeded_index_files(self) -> None:
        """Delete index and temporary files other than those of the last two committed generations."""
        last = self.catalogue.last_generation()
        keep = set()
        for generation in (self.catalogue.generation(last), self.catalogue.generation(last - 1)):
            if generation is not None:
                keep |= {generation.hamming_file, generation.latent_file}
        if not self.store.indexes_dir.is_dir():
            return
        for path in self.store.indexes_dir.iterdir():
            if INDEX_FILE_NAME.match(path.name) and path.name not in keep:
                path.unlink(missing_ok=True)

    def _remove_unrecorded_model_folders(self) -> None:
        """Delete folders under models/ that no model row names. Only a writer creates them, and it
        records each right after saving it, so under the write lock an unrecorded one is the
        leftover of a killed run (or of checkpoint.save's temporary folder)."""
        if not self.store.models_dir.is_dir():
            return
        parts = [Path(folder).parts for folder in self.catalogue.model_dirs()]
        recorded = {p[1] for p in parts if len(p) > 1 and p[0] == MODELS_DIR}  # top folders under models/
        for path in self.store.models_dir.iterdir():
            if path.is_dir() and not path.is_symlink() and path.name not in recorded:
                shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------- snapshot
class Snapshot:
    """Searches and lookups answered from one committed generation, whatever writers do meanwhile.

    Every search returns Results: one list of Hit per query, best first, sorted by (distance, id),
    without padding (a query may get fewer than k hits when the store holds fewer items).
    """

    def __init__(
        self,
        store: Store,
        generation: Generation,
        hamming: HammingIndex,
        latent: LatentIndex,
        *,
        rebuilt_because: str | None = None,
    ):
        self.store = store
        self.generation = generation
        self.hamming = hamming
        self.latent = latent
        self.rebuilt_because = rebuilt_because  # why the files were rebuilt from SQLite, or None
        # "auto" probes the multi-index tables when that beats a scan; a short-lived process (a CLI
        # query) sets "scan": loading the compiled probing kernels costs more than scanning millions.
        self.hamming_strategy = "auto"

    @property
    def gen(self) -> int:
        return self.generation.gen

    @property
    def settings(self) -> dict[str, Any]:
        """The settings this generation was committed with."""
        return self.generation.settings

    @property
    def n_items(self) -> int:
        return self.hamming.ntotal

    def is_stale(self) -> bool:
        """True once a newer generation is committed: take a new store.snapshot() to see it."""
        return self.store.catalogue.last_generation() != self.gen

    def hashing_model(self) -> ModelRecord | None:
        model_id = self.generation.hashing_model
        return None if model_id is None else self.store.catalogue.model(model_id)

    def latent_model(self) -> ModelRecord | None:
        model_id = self.generation.latent_model
        return None if model_id is None else self.store.catalogue.model(model_id)

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of items by id (ids purged since this snapshot was taken are absent)."""
        return self.store.catalogue.items(ids)

    # -------------------------------------------------------------------------------- searches
    def search(
        self, *, mode: str, k: int, codes: np.ndarray | None = None, latents: np.ndarray | None = None
    ) -> Results:
        """Dispatch on mode ('hamming', 'latent' or 'hybrid'); pass the query arrays that mode needs."""
        if mode not in QUERY_MODES:
            raise QueryError(f"query mode must be one of {', '.join(QUERY_MODES)}, got {mode!r}")
        if mode == "hamming":
            return self.search_hamming(codes, k=k)
        if mode == "latent":
            return self.search_latent(latents, k=k)
        return self.search_hybrid(codes, latents, k=k)

    def search_hamming(self, codes: np.ndarray, *, k: int) -> Results:
        """Exact Hamming k-NN of packed uint8 codes (nq, bits/8); distances in bits."""
        _check_k(k)
        return _hits_per_query(*self.hamming.search(codes, k=k, strategy=self.hamming_strategy), as_type=int)

    def range_hamming(self, codes: np.ndarray, *, radius: int) -> Results:
        """Every item within Hamming distance <= radius of each code."""
        if not isinstance(radius, (int, np.integer)) or isinstance(radius, bool) or radius < 0:
            raise QueryError(f"radius must be a non-negative integer, got {radius!r}")
        return [
            _hits(distances, ids, as_type=int)
            for distances, ids in self.hamming.range_search(codes, radius=radius, strategy=self.hamming_strategy)
        ]

    def search_latent(self, latents: np.ndarray, *, k: int) -> Results:
        """k-NN of float32 latents (nq, latent_dim) by squared L2 (exact unless the index is HNSW)."""
        _check_k(k)
        return _hits_per_query(*self.latent.search(latents, k=k), as_type=float)

    def search_hybrid(
        self, codes: np.ndarray, latents: np.ndarray, *, k: int, shortlist: int | None = None
    ) -> Results:
        """Hamming shortlist re-ranked by exact latent distance (squared L2), ties by id.

        The shortlist is each query's exact Hamming k-NN of size max(10 * k, 100) (or `shortlist`):
        a fixed size bounds the re-ranking cost, where a Hamming ball can hold nothing or everything.
        """
        _check_k(k)
        size = max(10 * k, 100) if shortlist is None else shortlist
        if size < k:
            raise QueryError(f"the shortlist ({size}) must be at least k ({k})")
        latents = check_latents(latents, dim=self.latent.dim, what="latent queries")
        _, candidates = self.hamming.search(codes, k=size, strategy=self.hamming_strategy)
        if len(candidates) != len(latents):
            raise QueryError(
                f"got {len(candidates)} codes but {len(latents)} latents; give one of each per query"
            )
        return [self._rerank(query, row[row >= 0], k) for query, row in zip(latents, candidates)]

    def _rerank(self, query: np.ndarray, ids: np.ndarray, k: int) -> list[Hit]:
        distances = ((self.latent.vectors_of(ids) - query) ** 2).sum(axis=1, dtype=np.float32)
        order = np.lexsort((ids, distances))[:k]
        return _hits(distances[order], ids[order], as_type=float)

    def with_metadata(self, results: Results) -> Results:
        """The same hits with path and label filled in from the catalogue."""
        ids = {hit.id for hits in results for hit in hits}
        items = self.items(ids)
        if len(items) != len(ids):
            raise StoreError(f"snapshot of generation {self.gen} is out of date; take a new store.snapshot()")
        return [
            [replace(hit, path=items[hit.id].path, label=items[hit.id].label) for hit in hits]
            for hits in results
        ]


# ---------------------------------------------------------------------------------------- helpers
def _load_index_files(store: Store, generation: Generation) -> tuple[HammingIndex, LatentIndex]:
    """Both index files of a generation, checked against their digests and the catalogue."""
    hamming_bytes = _read_verified(store.indexes_dir / generation.hamming_file, generation.hamming_blake2b)
    latent_bytes = _read_verified(store.indexes_dir / generation.latent_file, generation.latent_blake2b)
    try:
        hamming = HammingIndex.from_bytes(hamming_bytes)
        latent = LatentIndex.from_bytes(latent_bytes, hnsw_threshold=store.hnsw_threshold)
    except (IndexFileError, LatentError) as err:
        raise UnusableIndexFiles(str(err)) from err
    settings = generation.settings
    if (hamming.nbits, latent.dim) != (settings["bits"], settings["latent_dim"]):
        raise UnusableIndexFiles(f"index files of generation {generation.gen} do not match its settings")
    expected = store.catalogue.count_visible(generation.gen)
    if not hamming.ntotal == latent.ntotal == expected:
        raise UnusableIndexFiles(
            f"index files of generation {generation.gen} hold {hamming.ntotal} and {latent.ntotal} "
            f"items, the catalogue {expected}"
        )
    return hamming, latent


def _read_verified(path: Path, blake2b_hex: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnusableIndexFiles(f"cannot read {path.name}: {err.strerror or err}") from err
    if _digest(data) != blake2b_hex:
        raise UnusableIndexFiles(f"{path.name} does not match its recorded blake2b digest (corrupted)")
    return data


def _indexes_from_catalogue(
    store: Store, gen: int, settings: dict[str, Any]
) -> tuple[HammingIndex, LatentIndex]:
    """Both indexes rebuilt from the codes and latents in SQLite of the rows visible in gen."""
    hamming = HammingIndex(settings["bits"])
    latent = LatentIndex(settings["latent_dim"], hnsw_threshold=store.hnsw_threshold)
    _add_rows(hamming, latent, *store.catalogue.items_visible(gen))
    return hamming, latent


@contextmanager
def _write_lock(path: Path, *, store: Path) -> Iterator[None]:
    """Exclusive, non-blocking flock on path, with our pid written inside while we hold it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreError(
                f"another hashae writer (pid {holder}) is updating the store at {store}; "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _add_rows(
    hamming: HammingIndex, latent: LatentIndex, ids: np.ndarray, codes: np.ndarray, latents: np.ndarray
) -> None:
    if len(ids):
        hamming.add(codes, ids)
        latent.add(latents, ids)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise QueryError(f"k must be a positive integer, got {k!r}")


def _hits(distances: np.ndarray, ids: np.ndarray, *, as_type: type) -> list[Hit]:
    return [Hit(int(i), as_type(d)) for d, i in zip(distances.tolist(), ids.tolist()) if i >= 0]


def _hits_per_query(distances: np.ndarray, ids: np.ndarray, *, as_type: type) -> Results:
    return [_hits(d, i, as_type=as_type) for d, i in zip(distances, ids)]

