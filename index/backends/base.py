"""The store backend interface: what the pipeline, the search module, the server and the CLI may
use of a store, whatever holds the vectors (the local FAISS + multi-index hashing + SQLite store, or
Milvus). Nothing outside index/backends imports a backend's own modules: they open a store with
hashae.index.backends.open_store and talk to these Protocols.

    StoreBackend      settings, live items, models, info; writer() and snapshot()
    WriteTransaction  changes towards the next generation, published by commit()
    ReadView          one committed generation: Hamming k-NN and range, latent k-NN, vectors and
                      metadata by id. Searches return Results: one Neighbours (ids and distances as
                      columns, a sequence of Hit when read as one) per query, sorted by
                      (distance, id), no padding. Exact backends equal brute force, ties by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hashae.errors import HashaeError
from hashae.index.settings import StoreSettings

class StoreError(HashaeError):
    """The store or its catalogue is missing, locked by another writer, inconsistent, or too new."""


class SearchArgumentError(HashaeError, ValueError):
    """A read view was asked with a bad k, radius or id array."""


class UnknownItemError(HashaeError, KeyError):
    """Ids asked of a read view (codes_of, latents_of) are not in its generation."""

    __str__ = Exception.__str__  # KeyError would print the message in quotes


# ---------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class NewItem:
    """What the writer knows of a file before it gets an id (path relative to the source root)."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str  # blake2b hex digest of the file bytes
    label: str | None = None


@dataclass(frozen=True)
class LiveItem:
    """A live row as the incremental diff needs it: is the file on disk still the same?"""

    id: int
    size: int
    mtime_ns: int
    content_hash: str


@dataclass(frozen=True)
class ItemInfo:
    """The metadata of one item row (not its code or latent)."""

    id: int
    path: str
    label: str | None
    size: int
    mtime_ns: int
    content_hash: str
    added_gen: int
    removed_gen: int | None
    added_at: str


@dataclass(frozen=True)
class SkippedFile:
    """A file the reader could not use, and why."""

    path: str
    reason: str
    size: int | None
    mtime_ns: int | None
    seen_at: str


@dataclass(frozen=True)
class ModelRecord:
    """A trained model: its checkpoint folder `dir` is relative to the store folder."""

    id: int
    role: str
    dir: str
    kind: str
    created_at: str
    info: dict[str, Any]



CHECKPOINT_DIGESTS = "checkpoint_blake2b"  # key of a model record's info: {file name: blake2b hex}
RETRAIN_ADVICE = "run `hashae index FOLDER --retrain` to train new models"


def with_checkpoint_digests(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """A model record (as WriteTransaction.add_models takes it, dir relative to the store root) with
    the blake2b digests of its checkpoint files added to its info, so loads can check them."""
    from hashae.inference import checkpoint_digests

    digests = checkpoint_digests(Path(root) / record["dir"])
    info = dict(record.get("info") or {})
    if digests:
        info[CHECKPOINT_DIGESTS] = digests
    return {**record, "info": info}


def verified_model_dir(root: Path, model: ModelRecord) -> Path:
    """The checkpoint folder of a model record under a store root, its files checked against the
    digests recorded with it (records made before digests were recorded are taken as they are).
    A changed file raises CheckpointError naming it and saying to retrain."""
    from hashae.inference import verify_checkpoint_digests

    folder = Path(root) / model.dir
    verify_checkpoint_digests(folder, model.info.get(CHECKPOINT_DIGESTS) or {}, fix=RETRAIN_ADVICE)
    return folder


@dataclass(frozen=True)
class Hit:
    """One search result.

    distance: Hamming distance in bits (int) for Hamming searches; squared L2 distance between VAE
    means (float) for latent searches. path and label are filled in from the item's metadata by
    the search module (None before).
    """

    id: int
    distance: int | float
    path: str | None = None
    label: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Neighbours(Sequence[Hit]):
    """One query's answer from a ReadView search, as columns: ids int64 (n,) and distances (n,),
    best first, sorted by (distance, id), no padding. Distances are integers (Hamming bits) or
    floats (squared L2), as the search measures them.

    The search module works on the columns (a hybrid query's shortlist is 1,000 items or more);
    read as a sequence it gives Hit objects, made on access, so callers that want objects get them.
    """

    __slots__ = ("ids", "distances")

    def __init__(self, ids: np.ndarray | Sequence[int], distances: np.ndarray | Sequence[int | float]) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.distances = np.asarray(distances).reshape(-1)
        if len(self.ids) != len(self.distances):
            raise ValueError(f"{len(self.ids)} ids but {len(self.distances)} distances")

    @classmethod
    def of_pairs(cls, pairs: Sequence[tuple[int | float, int]], *, dtype: type) -> Neighbours:
        """From (distance, id) pairs already in order; dtype: np.int64 or np.float32 distances."""
        return cls([item for _, item in pairs], np.array([distance for distance, _ in pairs], dtype=dtype))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Neighbours(self.ids[index], self.distances[index])
        return Hit(int(self.ids[index]), self.distances[index].item())

    def __iter__(self):
        return map(Hit, self.ids.tolist(), self.distances.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Neighbours):
            return np.array_equal(self.ids, other.ids) and np.array_equal(self.distances, other.distances)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Neighbours({list(self)!r})"


Results = list[Neighbours]  # one answer per query


@dataclass(frozen=True)
class ModelPair:
    """The catalogue records of the two models a generation's vectors were made with."""

    hashing: ModelRecord
    latent: ModelRecord


@runtime_checkable
class ReadView(Protocol):
    """One committed generation, read-only, whatever writers do meanwhile."""

    @property
    def gen(self) -> int: ...

    @property
    def settings(self) -> StoreSettings: ...

    @property
    def n_items(self) -> int: ...

    @property
    def committed_at(self) -> str:
        """When this generation was committed (ISO 8601, UTC)."""

    def is_stale(self) -> bool:
        """True once a newer generation is committed (take a new snapshot to see it)."""

    def models(self) -> ModelPair | None:
        """The models this generation's codes and latents were made with (None: no models yet)."""

    def model_dir(self, model: ModelRecord) -> Path:
        """The checkpoint folder of a model record."""

    def items(self, ids: Iterable[int]) -> dict[int, ItemInfo]:
        """Metadata of visible items by id (unknown ids are absent)."""

    def item_ids(self) -> np.ndarray:
        """Every visible id, int64 (n,), ascending."""

    def search_hamming(self, codes: np.ndarray, *, k: int) -> Results:
        """Hamming k-NN of packed uint8 codes (nq, bits/8); distances in bits."""

    def range_hamming(self, codes: np.ndarray, *, radius: int) -> Results:
        """Every item within Hamming distance <= radius of each code."""

    def search_latent(self, latents: np.ndarray, *, k: int) -> Results:
        """k-NN of float32 latents (nq, latent_dim) by squared L2."""

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored packed codes uint8 (n, bits/8) of visible ids, in order (UnknownItemError if absent)."""

    def latents_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored latents float32 (n, latent_dim) of visible ids, in order (UnknownItemError if absent)."""


@runtime_checkable
class WriteTransaction(Protocol):
    """Changes towards the next generation, made by the one writer; commit() publishes them.

    Leaving the writer without commit() keeps what was added: the next writer commits it."""

    def live_items(self) -> dict[str, LiveItem]:
        """Every live row by path, pending ones included."""

    def set_settings(self, settings: StoreSettings) -> None:
        """The settings the next commit freezes into its generation."""

    def add_items(self, rows: Sequence[NewItem], codes: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Add rows with codes uint8 (n, bits/8) and latents float32 (n, latent_dim); returns ids."""

    def remove_items(self, ids: Iterable[int]) -> None:
        """Drop live rows (deleted files, or the old row of a changed file)."""

    def update_mtimes(self, entries: Iterable[tuple[int, int]]) -> None:
        """Record new mtimes (id, mtime_ns) of touched files whose content did not change."""

    def pending(self) -> tuple[int, int]:
        """(rows added, rows removed) that commit() would publish: (0, 0) for a no-op run."""

    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Record unusable files as (path, reason, size, mtime_ns)."""

    def clear_skipped(self, paths: Iterable[str]) -> None:
        """Forget skipped files that were fixed, indexed or deleted."""

    def add_models(self, *, hashing: dict[str, Any], latent: dict[str, Any]) -> ModelPair:
        """Record a new pair of checkpoint folders in one transaction (each: dir, kind, info)."""

    def commit(self, *, models: ModelPair) -> int:
        """Publish the next generation, made with `models`; returns its number."""


@runtime_checkable
class StoreBackend(Protocol):
    """A store: its settings, models and items, one writer at a time, any number of readers."""

    root: Path

    def settings(self) -> StoreSettings | None:
        """The working settings (None for a store nothing was indexed into yet)."""

    def latest_models(self) -> ModelPair | None:
        """The newest recorded model pair."""

    @property
    def models_dir(self) -> Path:
        """Where new checkpoint folders go (record them with WriteTransaction.add_models)."""

    def model_dir(self, model: ModelRecord) -> Path: ...

    def skipped(self) -> list[SkippedFile]: ...

    def backend_fields(self) -> dict[str, str | None]:
        """{"backend": name, "backend_uri": where the vectors live or None}: what this store's
        StoreSettings must say (the pipeline copies them into the settings it sets)."""

    def writer(self) -> AbstractContextManager[WriteTransaction]:
        """Hold the store's write lock; StoreError when another writer holds it."""

    def snapshot(self) -> ReadView:
        """A read view of the newest committed generation (takes no lock)."""

    def info(self) -> dict[str, Any]:
        """What `hashae info --json` prints ("empty": true while nothing is committed)."""

    def close(self) -> None: ...

    def __enter__(self) -> StoreBackend: ...

    def __exit__(self, *exc: object) -> None: ...
