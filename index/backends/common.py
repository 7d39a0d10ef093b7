"""What every store backend does the same way outside its vectors: the store folder's models and
skipped files, `info`, the read view's generation plumbing and the writer's model records.

A backend's classes take these as mixins and keep only what is their own (where the vectors live,
how a generation is committed and read). Each mixin names the attributes it relies on; the
catalogue side (SQL of models, skipped files, generations) is in catalogue_tables.py.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hashae.index.backends.base import (
    ModelPair,
    ModelRecord,
    SearchArgumentError,
    SkippedFile,
    StoreError,
    verified_model_dir,
    with_checkpoint_digests,
)
from hashae.index.settings import StoreSettings

MODELS_DIR = "models"  # checkpoint folders, inside every store folder
_Store = TypeVar("_Store", bound="StoreCommon")


# ------------------------------------------------------------------------------------------ store
class StoreCommon:
    """The StoreBackend methods both backends answer from their catalogue alone.

    Relies on: self.root (the store folder), self._catalogue (None until the catalogue property
    opens it), self.exists(), _open_catalogue() (a read-only CatalogueTables), STORE_NAME (how
    messages name such a store) and, for info(), _info_items(gen, generation), _info_pending(gen)
    and _info_backend(generation).
    """

    STORE_NAME = "hashae store"
    root: Path
    _catalogue: Any

    @property
    def catalogue(self) -> Any:
        """The catalogue, through a read-only connection (StoreError while no store exists)."""
        if self._catalogue is None:
            if not self.exists():
                raise StoreError(self._missing_message())
            self._catalogue = self._open_catalogue()
        return self._catalogue

    def close(self) -> None:
        """Close the catalogue's connection (the next use opens it again)."""
        if self._catalogue is not None:
            self._catalogue.close()
            self._catalogue = None

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    def model_dir(self, model: ModelRecord) -> Path:
        """The checkpoint folder of a model record, its files checked against the recorded digests."""
        return verified_model_dir(self.root, model)

    def settings(self) -> StoreSettings | None:
        """The working settings (what the next commit freezes; a snapshot has its generation's)."""
        return self.catalogue.settings() if self.exists() else None

    def latest_models(self) -> ModelPair | None:
        """The newest model pair recorded together (committed or not)."""
        return self.catalogue.latest_models() if self.exists() else None

    def skipped(self) -> list[SkippedFile]:
        """Every file the reader could not use, with its reason, by path."""
        return self.catalogue.skipped() if self.exists() else []

    def info(self) -> dict[str, Any]:
        """What `hashae info --json` prints: counts, skipped files with reasons, settings, models
        (and what the backend adds of its own). "empty" is true while nothing has been committed."""
        if not self.exists():
            return empty_info(self.root)
        catalogue = self.catalogue
        gen = catalogue.last_generation()
        generation = catalogue.generation(gen)
        settings = generation.settings if generation else catalogue.settings()
        skipped = catalogue.skipped()
        models = catalogue.models_of(generation) if generation else None
        return {
            **empty_info(self.root),
            "empty": generation is None,
            "generation": gen,
            "committed_at": generation.created_at if generation else None,
            "items": self._info_items(gen, generation),
            "pending": self._info_pending(gen + 1),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
            "skipped_by_reason": dict(Counter(s.reason for s in skipped)),
            "bits": settings.bits if settings else None,
            "latent_dim": settings.latent_dim if settings else None,
            "settings": settings.to_dict() if settings else None,
            "generations": catalogue.count_generations(),
            "models": {
                "hashing": asdict(models.hashing) if models else None,
                "latent": asdict(models.latent) if models else None,
            },
            **self._info_backend(generation),
        }

    def _info_backend(self, generation: Any) -> dict[str, Any]:
        """Keys a backend adds to info() (none by default)."""
        return {}

    def _last_generation_or_fail(self) -> Any:
        """The newest committed generation; StoreError while nothing is committed."""
        generation = self.catalogue.generation(self.catalogue.last_generation())
        if generation is None:
            raise StoreError(self._empty_message())
        return generation

    def _missing_message(self) -> str:
        return f"no {self.STORE_NAME} at {self.root} — run `hashae index FOLDER` first"

    def _empty_message(self) -> str:
        return f"the store at {self.root} is empty (no committed index yet) — run `hashae index FOLDER`"


def empty_info(root: Path) -> dict[str, Any]:
    """info() of a store nothing has been committed to (or that does not exist yet)."""
    return {
        "store": str(root),
        "empty": True,
        "generation": 0,
        "committed_at": None,
        "items": 0,
        "pending": {"added": 0, "removed": 0},
        "skipped": [],
        "skipped_by_reason": {},
        "bits": None,
        "latent_dim": None,
        "settings": None,
        "generations": 0,
        "models": {"hashing": None, "latent": None},
    }


def make_folders(root: Path, *inside: Path) -> list[Path]:
    """Create root (and its parents) and the folders inside it where missing.

    Returns the folders this call created, outermost first, so a caller can take them back.
    """
    missing = [folder for folder in (*reversed(root.parents), root, *inside) if not folder.exists()]
    for folder in missing:
        folder.mkdir(exist_ok=True)
    return missing


def remove_empty_folder(folder: Path) -> None:
    """Remove folder if it is empty; leave it (and say nothing) when it holds something or is gone."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or already gone): it holds something that is not ours to remove


# ------------------------------------------------------------------------------------ read view
class GenerationView:
    """The ReadView members both backends answer from the generation record and the store.

    Relies on: self.store (its catalogue and model_dir) and self.generation (gen, created_at,
    settings, and the hashing_model / latent_model ids the catalogue's models_of reads).
    """

    @property
    def gen(self) -> int:
        """The generation this view reads."""
        return self.generation.gen

    @property
    def committed_at(self) -> str:
        """When this generation was committed (ISO 8601, UTC)."""
        return self.generation.created_at

    @property
    def settings(self) -> StoreSettings:
        """The settings this generation was committed with."""
        return self.generation.settings

    def is_stale(self) -> bool:
        """True once a newer generation is committed: take a new store.snapshot() to see it."""
        return self.store.catalogue.last_generation() != self.gen

    def models(self) -> ModelPair | None:
        """The models this generation's codes and latents were made with."""
        return self.store.catalogue.models_of(self.generation)

    def model_dir(self, model: ModelRecord) -> Path:
        """The checkpoint folder of a model record, its files checked against the recorded digests."""
        return self.store.model_dir(model)


def check_int(name: str, value: int, *, minimum: int) -> None:
    """SearchArgumentError unless value is an integer (not a bool) of at least minimum (0 or 1)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise SearchArgumentError(f"{name} must be {wanted}, got {value!r}")


def as_ids(ids: np.ndarray) -> np.ndarray:
    """Ids asked of a read view as int64 (n,); SearchArgumentError unless a 1-D integer array."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (len(ids) and ids.dtype.kind not in "iu"):
        raise SearchArgumentError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------- writer
class WriterCommon:
    """The WriteTransaction members both backends implement on their catalogue alone: skipped
    files, model records (checkpoint folders inside the store, with their digests) and the
    clean-up of unrecorded checkpoint folders.

    Relies on: self.store (root, models_dir) and self.catalogue (the writer's read-write
    CatalogueTables connection).
    """

    def record_skipped(self, entries: Iterable[tuple[str, str, int | None, int | None]]) -> None:
        """Record unusable files as (path, reason, size, mtime_ns)."""
        self.catalogue.record_skipped(entries)

    def clear_skipped(self, paths: Iterable[str]) -> None:
        """Forget skipped files that were fixed, indexed or deleted."""
        self.catalogue.clear_skipped(paths)

    def add_models(self, *, hashing: dict[str, Any], latent: dict[str, Any]) -> ModelPair:
        """Record a new pair of checkpoint folders in one transaction; returns their records.

        Each is {"dir": folder inside the store (absolute, or relative to it), "kind": model kind,
        "info": JSON-able training summary}. A kill leaves both recorded or neither.
        """
        records = {role: {**record, "dir": self._relative_model_dir(record.get("dir"))}
                   for role, record in (("hashing", hashing), ("latent", latent))}
        records = {role: with_checkpoint_digests(record, self.store.root) for role, record in records.items()}
        return self.catalogue.add_models(**records)

    def _at(self, step: str) -> None:
        """A named point of the writer; does nothing. Crash tests override it to kill the process here."""

    def _relative_model_dir(self, folder: str | Path | None) -> str:
        """A checkpoint folder as a model record keeps it: relative to the store, posix."""
        if folder is None:
            raise StoreError("a model record needs its checkpoint folder (dir)")
        folder = Path(folder)
        if folder.is_absolute():
            try:
                folder = folder.relative_to(self.store.root.absolute())
            except ValueError:
                raise StoreError(f"model folder {folder} is outside the store {self.store.root}") from None
        return folder.as_posix()

    def _check_models(self, models: ModelPair) -> None:
        """TypeError unless a ModelPair; StoreError when a record is not of its role."""
        if not isinstance(models, ModelPair):
            raise TypeError(f"commit takes models=ModelPair, got {type(models).__name__}")
        for role, record in (("hashing", models.hashing), ("latent", models.latent)):
            if self.catalogue.model(record.id).role != role:
                raise StoreError(f"model {record.id} is not a {role} model")

    def _remove_unrecorded_model_folders(self) -> None:
        """Delete folders under models/ that no model row names. Only a writer creates them, and it
        records each right after saving it, so under the write lock an unrecorded one is the
        leftover of a killed run (or of checkpoint.save's temporary folder)."""
        models_dir = self.store.models_dir
        if not models_dir.is_dir():
            return
        parts = [Path(folder).parts for folder in self.catalogue.model_dirs()]
        recorded = {p[1] for p in parts if len(p) > 1 and p[0] == MODELS_DIR}  # top folders under models/
        for path in models_dir.iterdir():
            if path.is_dir() and not path.is_symlink() and path.name not in recorded:
                shutil.rmtree(path, ignore_errors=True)
