"""Answering queries: an image (file, bytes or pixels) or an indexed item, in one of three modes.

A QueryEngine holds one read view of a store (a committed generation) and the numpy encoder stage
of that generation's models; every search goes through index/search.py. No torch import: a cold
`hashae query` pays only for numpy, FAISS and SQLite. An engine never changes generation: to follow
a writer, build a new engine once `engine.view.is_stale()` (the server swaps whole engines, so no
answer mixes generations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hashae.decode import decode_image, image_pixels
from hashae.errors import HashaeError
from hashae.index.backends.base import Hit, ReadView, StoreBackend
from hashae.index.encoder import EncoderStage
from hashae.index.search import DEFAULT_K, QUERY_MODES, TIE_ORDERS, QueryError, search, with_metadata
from hashae.index.settings import StoreSettings

__all__ = ["DEFAULT_K", "QUERY_MODES", "TIE_ORDERS", "Answer", "QueryEngine", "QueryError", "single_faiss_thread"]


@dataclass(frozen=True)
class Answer:
    """The results of one query, shaped like one line of `hashae query --json`."""

    query: str | int
    mode: str
    hits: list[Hit]
    code_bits: str  # the query's code as a string of 0/1
    radius: int | None = None
    ties: str = "latent"

    def as_dict(self) -> dict[str, Any]:
        document = {
            "query": self.query,
            "mode": self.mode,
            "ties": self.ties,
            "code": self.code_bits,
            "results": [
                {"rank": rank, "id": hit.id, "path": hit.path, "label": hit.label, "distance": hit.distance}
                for rank, hit in enumerate(self.hits, start=1)
            ],
        }
        if self.radius is not None:
            document["radius"] = self.radius
        return document


class QueryEngine:
    """Searches one committed generation of a store with the models its vectors were made with."""

    def __init__(self, view: ReadView, encoder: EncoderStage) -> None:
        """view: the generation to search; encoder: the encoder stage of the models its vectors were
        made with. QueryEngine.open(store) gives both from a store."""
        self.view = view
        self.encoder = encoder

    @classmethod
    def open(cls, store: StoreBackend) -> QueryEngine:
        """An engine over the store's newest committed generation; QueryError when it has no models."""
        return cls.over(store.snapshot(), where=store.root)

    @classmethod
    def over(cls, view: ReadView, *, where: Path | str) -> QueryEngine:
        """An engine over a generation already open (the store at `where`, named in the QueryError
        when that generation has no models)."""
        single_faiss_thread()
        models = view.models()
        if models is None:
            raise QueryError(f"the store at {where} has no trained models; run `hashae index FOLDER`")
        return cls(view, EncoderStage.load(view.model_dir(models.hashing), view.model_dir(models.latent)))

    @property
    def settings(self) -> StoreSettings:
        """The settings of the generation being searched."""
        return self.view.settings

    # ----------------------------------------------------------------------------- encoding
    def decode(self, source: Path | bytes) -> np.ndarray:
        """An image file or its bytes as the models' input float32 (C, H, W); DataError when unusable."""
        return decode_image(source, size=self.settings.image_size, channels=self.settings.channels)

    def decode_altered(self, altered: Image.Image | bytes) -> np.ndarray:
        """An altered copy (index/copies.alter: an image in memory, or a file's bytes) as the
        models' input float32 (C, H, W), as decode gives it from the copy's file."""
        if isinstance(altered, bytes):
            return self.decode(altered)
        return image_pixels(altered, size=self.settings.image_size, channels=self.settings.channels)

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed codes uint8 (n, bits/8) and latents float32 (n, d) of decoded images (n, C, H, W)."""
        return self.encoder.encode(pixels)

    def stored_vectors(self, item_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored code (1, bits/8) and latent (1, d) of an indexed item; QueryError if unknown."""
        ids = np.array([item_id], dtype=np.int64)
        try:
            return self.view.codes_of(ids), self.view.latents_of(ids)
        except (KeyError, HashaeError):
            raise QueryError(f"no item with id {item_id} in the index (generation {self.view.gen})") from None

    def codes_of(self, ids: list[int]) -> np.ndarray:
        """Stored packed codes uint8 (n, bits/8) of indexed items."""
        if not ids:
            return np.empty((0, self.settings.code_bytes), np.uint8)
        return self.view.codes_of(np.asarray(ids, dtype=np.int64))

    # ------------------------------------------------------------------------------ queries
    def query_image(self, source: Path | bytes, *, label: str, mode: str = "hamming", k: int | None = None, radius: int | None = None, ties: str = "latent") -> Answer:
        """Search with an image file or its bytes; `label` names the query in the answer."""
        return self.query_pixels(self.decode(source)[None], label=label, mode=mode, k=k, radius=radius, ties=ties)

    def query_pixels(self, pixels: np.ndarray, *, label: str, mode: str = "hamming", k: int | None = None, radius: int | None = None, ties: str = "latent") -> Answer:
        """Search with one decoded image float32 (1, C, H, W) in [0, 1]."""
        codes, latents = self.encode(pixels)
        return self.search(label, codes, latents, mode=mode, k=k, radius=radius, ties=ties)

    def query_id(self, item_id: int, *, mode: str = "hamming", k: int | None = None, radius: int | None = None, ties: str = "latent") -> Answer:
        """Search with an indexed item's stored code and latent. The item itself comes first, at
        distance 0, even when other items share its code and latent exactly."""
        codes, latents = self.stored_vectors(item_id)
        return self.search(item_id, codes, latents, mode=mode, k=k, radius=radius, ties=ties, itself=item_id)

    def search(self, query: str | int, codes: np.ndarray, latents: np.ndarray, *, mode: str, k: int | None, radius: int | None, ties: str = "latent", itself: int | None = None) -> Answer:
        """One query's answer through index/search.py, with paths and labels filled in."""
        hits = search(self.view, codes=codes, latents=latents, mode=mode, k=k, radius=radius, ties=ties, itself=[itself])
        hits = with_metadata(self.view, hits)[0]
        bits = "".join("1" if b else "0" for b in np.unpackbits(codes[0]))
        return Answer(query=query, mode=mode, hits=hits, code_bits=bits, radius=radius, ties=ties)

    def source_path(self, hit: Hit) -> Path:
        """Where an indexed item's file lies (the folder that was indexed + its relative path)."""
        return self.file_of(hit.path)

    def file_of(self, path: str | None) -> Path:
        """Where the file of an item's stored relative path lies (under the indexed folder)."""
        return Path(self.settings.source_root or ".") / (path or "")


def single_faiss_thread() -> None:
    """Let FAISS use one OpenMP thread in the calling thread (the setting is per thread).

    Queries come one (or a few) at a time: OpenMP threads only add start-up and, on a busy
    machine, spin-waiting (single searches measured 10-100x slower with them). Multi-threaded
    callers (the server) call this in each thread.
    """
    import faiss

    faiss.omp_set_num_threads(1)
