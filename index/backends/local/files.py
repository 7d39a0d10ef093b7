"""The index files of a generation: build, publish, load and verify, clean up.

A commit publishes its two files crash-safely: written under temporary names, fsynced, renamed into
place, the folder fsynced; their blake2b digests then go into the generation's catalogue row (the
commit point). Loading checks the digests and that the files hold exactly the rows the catalogue
says the generation shows; when anything is off, the indexes are rebuilt from the codes and latents
kept in SQLite, which are the source of truth.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hashae.durable import fsync_folder, write_synced
from hashae.index.backends.local.catalogue import Catalogue, Generation
from hashae.index.backends.local.hamming import HammingIndex, IndexFileError
from hashae.index.backends.local.latent import LatentError, LatentIndex
from hashae.index.backends.local.layout import HAMMING_FILE, INDEX_FILE_NAME, LATENT_FILE, TEMP_SUFFIX
from hashae.index.settings import StoreSettings

Indexes = tuple[HammingIndex, LatentIndex]


class UnusableIndexFiles(Exception):
    """Internal: a generation's index files are missing, corrupt or do not match the catalogue."""


def publish_index_files(
    folder: Path, gen: int, hamming: HammingIndex, latent: LatentIndex, *, at: Callable[[str], None]
) -> dict[str, str]:
    """Write both files of generation gen under temporary names, fsync, rename into place, fsync
    the folder. Returns the catalogue columns naming them and their digests.

    at(step) is called after "temp_files_written" and "files_renamed" (crash tests kill there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    contents = {HAMMING_FILE.format(gen=gen): hamming.to_bytes(), LATENT_FILE.format(gen=gen): latent.to_bytes()}
    for name, data in contents.items():
        write_synced(folder / (name + TEMP_SUFFIX), data)
    at("temp_files_written")
    for name in contents:
        os.replace(folder / (name + TEMP_SUFFIX), folder / name)
    fsync_folder(folder)
    at("files_renamed")
    (hamming_file, hamming_bytes), (latent_file, latent_bytes) = contents.items()
    return {
        "hamming_file": hamming_file,
        "latent_file": latent_file,
        "hamming_blake2b": digest(hamming_bytes),
        "latent_blake2b": digest(latent_bytes),
    }


def load_index_files(
    folder: Path, generation: Generation, catalogue: Catalogue, *, hnsw_threshold: int
) -> Indexes:
    """Both index files of a generation, checked against their digests and the catalogue."""
    hamming_bytes = _read_verified(folder / generation.hamming_file, generation.hamming_blake2b)
    latent_bytes = _read_verified(folder / generation.latent_file, generation.latent_blake2b)
    try:
        hamming = HammingIndex.from_bytes(hamming_bytes)
        latent = LatentIndex.from_bytes(latent_bytes, hnsw_threshold=hnsw_threshold)
    except (IndexFileError, LatentError) as err:
        raise UnusableIndexFiles(str(err)) from err
    settings = generation.settings
    if (hamming.nbits, latent.dim) != (settings.bits, settings.latent_dim):
        raise UnusableIndexFiles(f"index files of generation {generation.gen} do not match its settings")
    expected = catalogue.count_visible(generation.gen)
    if not hamming.ntotal == latent.ntotal == expected:
        raise UnusableIndexFiles(
            f"index files of generation {generation.gen} hold {hamming.ntotal} and {latent.ntotal} "
            f"items, the catalogue {expected}"
        )
    return hamming, latent


def indexes_from_catalogue(
    catalogue: Catalogue, gen: int, settings: StoreSettings, *, hnsw_threshold: int
) -> Indexes:
    """Both indexes rebuilt from the codes and latents in SQLite of the rows visible in gen."""
    hamming = HammingIndex(settings.bits)
    latent = LatentIndex(settings.latent_dim, hnsw_threshold=hnsw_threshold)
    add_rows(hamming, latent, *catalogue.items_visible(gen))
    return hamming, latent


def add_rows(
    hamming: HammingIndex, latent: LatentIndex, ids: np.ndarray, codes: np.ndarray, latents: np.ndarray
) -> None:
    """Add rows (ids int64 (n,), codes uint8 (n, B), latents float32 (n, d)) to both indexes."""
    if len(ids):
        hamming.add(codes, ids)
        latent.add(latents, ids)


def remove_other_index_files(folder: Path, *, keep: set[str]) -> None:
    """Delete index files and temporary files in folder whose names are not in keep."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if INDEX_FILE_NAME.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)


def digest(data: bytes) -> str:
    """The blake2b digest (32 bytes, hex) recorded for an index file."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def _read_verified(path: Path, blake2b_hex: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnusableIndexFiles(f"cannot read {path.name}: {err.strerror or err}") from err
    if digest(data) != blake2b_hex:
        raise UnusableIndexFiles(f"{path.name} does not match its recorded blake2b digest (corrupted)")
    return data
