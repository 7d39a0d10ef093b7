"""Answering queries: an image (file or bytes) or an indexed item, in one of three modes.

A QueryEngine holds one store snapshot (a committed generation) and the numpy encoders of that
generation's models. No torch import: a cold `hashae query` pays only for numpy, FAISS and SQLite.
An engine never changes generation: to follow a writer, build a new engine once
`engine.snapshot.is_stale()` (the server swaps whole engines, so no answer mixes generations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashae.data import decode_image
from hashae.errors import HashaeError
from hashae.inference import InferenceEncoder
from hashae.index.backends.local.store import QUERY_MODES, Hit, QueryError, Snapshot, Store

DEFAULT_K = 10


@dataclass(frozen=True)
class Answer:
    """The results of one query, shaped like one line of `hashae query --json`."""

    query: str | int
    mode: str
    hits: list[Hit]
    code_bits: str  # the query's code as a string of 0/1
    radius: int | None = None

    def as_dict(self) -> dict[str, Any]:
        document = {
            "query": self.query,
            "mode": self.mode,
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
    """Searches over the newest committed generation of a store."""

    def __init__(self, store: Store, *, hamming_strategy: str = "auto") -> None:
        """hamming_strategy: "auto" for long-lived processes (probe when it pays), "scan" for one-shot
        ones: a cold process pays ~1 s to load the probing kernels, a scan of 1M codes ~1 ms."""
        import faiss

        # Queries come one (or a few) at a time: FAISS's OpenMP threads only add start-up and, on a
        # busy machine, spin-waiting (single searches measured 10-100x slower with them). The
        # setting is per thread: multi-threaded callers set it in each thread (see index.server).
        faiss.omp_set_num_threads(1)
        self.store = store
        self.hamming_strategy = hamming_strategy
        self._load(store.snapshot())

    def _load(self, snapshot: Snapshot) -> None:
        hashing, latent = snapshot.hashing_model(), snapshot.latent_model()
        if hashing is None or latent is None:
            raise QueryError(f"the store at {self.store.root} has no trained models; run `hashae index FOLDER`")
        encoders = (InferenceEncoder.load(self.store.model_dir(hashing)), InferenceEncoder.load(self.store.model_dir(latent)))
        snapshot.hamming_strategy = self.hamming_strategy
        self.snapshot, (self.hashing, self.latent) = snapshot, encoders

    @property
    def settings(self) -> dict[str, Any]:
        return self.snapshot.settings

    # ----------------------------------------------------------------------------- encoding
    def decode(self, source: Path | bytes) -> np.ndarray:
        """An image file or its bytes as the models' input (C, H, W); DataError when unusable."""
        return decode_image(source, size=self.settings["image_size"], channels=self.settings["channels"])

    def encode_images(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed codes (n, bits/8) and latents (n, d) of decoded images (n, C, H, W)."""
        codes, _ = self.hashing.encode(pixels)
        return codes, self.latent.embed(pixels)

    def stored_vectors(self, item_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored code (1, bits/8) and latent (1, d) of an indexed item."""
        snapshot = self.snapshot
        ids = np.array([item_id], dtype=np.int64)
        try:
            return snapshot.hamming.codes_of(ids), snapshot.latent.vectors_of(ids)
        except (KeyError, HashaeError):
            raise QueryError(f"no item with id {item_id} in the index (generation {snapshot.gen})") from None

    # ------------------------------------------------------------------------------ queries
    def query_image(self, source: Path | bytes, *, label: str, mode: str = "hamming", k: int | None = None, radius: int | None = None) -> Answer:
        """Search with an image file or its bytes; `label` names the query in the answer."""
        codes, latents = self.encode_images(self.decode(source)[None])
        return self.search(label, codes, latents, mode=mode, k=k, radius=radius)

    def query_id(self, item_id: int, *, mode: str = "hamming", k: int | None = None, radius: int | None = None) -> Answer:
        """Search with an indexed item's stored code and latent. The item itself comes first, at
        distance 0, even when more than k items share its code (ties otherwise rank by id)."""
        codes, latents = self.stored_vectors(item_id)
        return self.search(item_id, codes, latents, mode=mode, k=k, radius=radius, itself=item_id)

    def search(self, query: str | int, codes: np.ndarray, latents: np.ndarray, *, mode: str, k: int | None, radius: int | None, itself: int | None = None) -> Answer:
        """One query's answer: k nearest in the mode, or with a radius every item within it (Hamming).
        `itself`: the id of the indexed item the query is, put first at distance 0."""
        if mode not in QUERY_MODES:
            raise QueryError(f"unknown mode {mode!r}; use one of {', '.join(QUERY_MODES)}")
        snapshot = self.snapshot
        if radius is not None:
            if mode != "hamming":
                raise QueryError("--radius is a Hamming-ball search: use it with --mode hamming")
            if radius < 0 or radius > self.hashing.code_size:
                raise QueryError(f"radius must be between 0 and {self.hashing.code_size}, got {radius}")
            hits = snapshot.range_hamming(codes, radius=radius)[0]
        else:
            k = k or DEFAULT_K
            hits = snapshot.search(mode=mode, k=k, codes=codes, latents=latents)[0]
        if itself is not None:
            hits = [Hit(itself, 0 if mode == "hamming" else 0.0), *(hit for hit in hits if hit.id != itself)]
        hits = hits[:k] if k else hits
        hits = snapshot.with_metadata([hits])[0]
        bits = "".join("1" if b else "0" for b in np.unpackbits(codes[0]))
        return Answer(query=query, mode=mode, hits=hits, code_bits=bits, radius=radius)

    def source_path(self, hit: Hit) -> Path:
        """Where an indexed item's file lies (the folder that was indexed + its relative path)."""
        return Path(self.settings.get("source_root", ".")) / (hit.path or "")
