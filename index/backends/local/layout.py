"""The local store's folder (default ./.hashae): where each of its files lives.

    .hashae/
      catalogue.db            SQLite (WAL): items with codes and latents, skipped files, models,
                              generations, settings -- the source of truth (see catalogue.py)
      write.lock              flock'ed by the one writer at a time; holds its pid (see lock.py)
      models/                 checkpoint folders (recorded in the catalogue's `models` table)
      indexes/hamming-G.bin   HammingIndex of generation G   } written, verified and
      indexes/latent-G.faiss  LatentIndex of generation G    } cleaned up by files.py
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hashae.index.backends.common import MODELS_DIR, make_folders

CATALOGUE_FILE = "catalogue.db"
LOCK_FILE = "write.lock"
INDEXES_DIR = "indexes"
HAMMING_FILE = "hamming-{gen}.bin"
LATENT_FILE = "latent-{gen}.faiss"
TEMP_SUFFIX = ".tmp"
INDEX_FILE_NAME = re.compile(r"^(hamming-\d+\.bin|latent-\d+\.faiss)(\.tmp)?$")
SQLITE_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class StoreLayout:
    """Paths inside one store folder."""

    root: Path

    @property
    def catalogue(self) -> Path:
        return self.root / CATALOGUE_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    @property
    def indexes_dir(self) -> Path:
        return self.root / INDEXES_DIR

    def catalogue_files(self) -> list[Path]:
        """The catalogue and the side files SQLite keeps beside it in WAL mode."""
        return [self.catalogue, *(self.root / (CATALOGUE_FILE + suffix) for suffix in SQLITE_SIDE_FILES)]

    def make_folders(self) -> list[Path]:
        """Create the store folder (and its parents), models/ and indexes/ where missing.

        Returns the folders this call created, outermost first, so a caller can take them back.
        """
        return make_folders(self.root, self.models_dir, self.indexes_dir)
