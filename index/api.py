"""hashae's Python API, for notebooks and scripts: open a store, search it, read its items, encode.

    from hashae.index.api import Store, load_model

    with Store.open(".hashae") as store:               # the folder `hashae index` made
        for match in store.query("photos/cat.jpg", k=5):   # a file, its bytes, pixels or an item id
            print(match.rank, match.distance, match.file)
        shoes = [item for item in store.items(label="Sneaker")]
        codes, latents = store.encode(pixels)            # float32 (n, C, H, W) in [0, 1]
        for group in store.duplicates():                 # near-duplicates, as `hashae duplicates`
            print([member.path for member in group.members])

    model = load_model("runs/hashing-32")                # a folder `hashae train` saved
    codes = model.codes(x)                               # packed uint8 (n, bits / 8)

Everything here reads; nothing writes to the store (indexing is `hashae index`). A Store searches
one committed generation, the newest when it was opened; `refresh()` moves it to a newer one that
a running `hashae index` committed since. Searches are the CLI's and the server's (same modes, same
order of ties, the same numbers), and nothing here imports torch.

This module is imported on its own (`import hashae` does not load it, nor the store code).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashae.errors import DataError
from hashae.index.backends.base import ItemInfo, StoreBackend
from hashae.index.calibration import DEFAULT_SAMPLE, TARGET_PRECISION, Calibration, duplicates_threshold, measure_threshold
from hashae.index.duplicates import DuplicateGroup, DuplicateMember, find_duplicate_groups
from hashae.index.query import DEFAULT_K, Answer, QueryEngine, QueryError
from hashae.index.settings import StoreSettings
from hashae.inference import InferenceEncoder

__all__ = ["DuplicateGroup", "DuplicateMember", "Item", "Match", "Store", "load_model"]

DEFAULT_STORE = ".hashae"
ITEMS_PER_READ = 4096  # ids read per catalogue look-up while iterating

ImageLike = str | os.PathLike | bytes | np.ndarray | int


@dataclass(frozen=True)
class Item:
    """One indexed file: its id, its path relative to the indexed folder (and where it lies now),
    its label (the first folder under the indexed one, if any), size and when it was indexed."""

    id: int
    path: str
    label: str | None
    file: Path
    size: int
    added_at: str


@dataclass(frozen=True)
class Match:
    """One search result: rank from 1, the item, and its distance (bits for Hamming searches,
    squared L2 between VAE means for latent and hybrid ones)."""

    rank: int
    id: int
    path: str
    label: str | None
    file: Path
    distance: int | float


class Store:
    """A hashae store opened for reading: search it, list its items, read its codes, encode images.

    Open one with Store.open(path); close it (or use `with`) to let its files go.
    """

    def __init__(self, backend: StoreBackend, engine: QueryEngine) -> None:
        """Use Store.open(path)."""
        self._backend = backend
        self._engine = engine

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> Store:
        """Open the store at path (default: $HASHAE_STORE, else ./.hashae).

        Raises StoreError when there is no store there and QueryError when nothing was indexed yet.
        """
        from hashae.index.backends import open_store

        backend = open_store(Path(path or os.environ.get("HASHAE_STORE") or DEFAULT_STORE))
        try:
            return cls(backend, QueryEngine.open(backend))
        except BaseException:
            backend.close()
            raise

    # ------------------------------------------------------------------------------ the store
    @property
    def root(self) -> Path:
        """The store folder."""
        return Path(self._backend.root)

    @property
    def settings(self) -> StoreSettings:
        """Code bits, latent size, the models' input image size and channels, the indexed folder."""
        return self._engine.settings

    @property
    def generation(self) -> int:
        """The committed generation being read."""
        return self._engine.view.gen

    def __len__(self) -> int:
        return int(self._engine.view.n_items)

    def refresh(self) -> bool:
        """Move to the newest committed generation; True when there was a newer one."""
        if not self._engine.view.is_stale():
            return False
        self._engine = QueryEngine.open(self._backend)
        return True

    def close(self) -> None:
        """Let the store's files go (the Store cannot be used afterwards)."""
        self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- searching
    def query(
        self, image: ImageLike, *, k: int | None = DEFAULT_K, mode: str = "hamming", radius: int | None = None, ties: str = "latent"
    ) -> list[Match]:
        """The nearest items to an image, nearest first.

        image: a file path, the bytes of an image file, pixels (see `pixels`) or an indexed item's id
        (an int: it comes first, at distance 0). mode: "hamming" (bit flips between codes), "latent"
        (squared L2 between VAE means) or "hybrid" (Hamming shortlist re-ranked by latent distance).
        radius: every item within that many bit flips (hamming only; k then caps the count, None
        for all). ties: order within equal Hamming distance, "latent" or "id".
        Raises DataError for an unreadable image and QueryError for a bad argument or unknown id.
        """
        if radius is not None and k == DEFAULT_K:
            k = None
        return self._matches(self._answer(image, k=k, mode=mode, radius=radius, ties=ties))

    def _answer(self, image: ImageLike, **options) -> Answer:
        engine = self._engine
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            return engine.query_id(int(image), **options)
        if isinstance(image, np.ndarray):
            return engine.query_pixels(self.pixels(image)[None], label="array", **options)
        if isinstance(image, (bytes, bytearray, memoryview)):
            return engine.query_image(bytes(image), label="bytes", **options)
        if isinstance(image, (str, os.PathLike)):
            return engine.query_image(Path(image), label=os.fspath(image), **options)
        raise QueryError(f"cannot search with a {type(image).__name__}: give a path, bytes, a numpy array or an item id")

    def _matches(self, answer: Answer) -> list[Match]:
        return [
            Match(rank=rank, id=hit.id, path=hit.path or "", label=hit.label, file=self._engine.source_path(hit), distance=hit.distance)
            for rank, hit in enumerate(answer.hits, start=1)
        ]

    # --------------------------------------------------------------------------------- encoding
    def pixels(self, image: str | os.PathLike | bytes | np.ndarray) -> np.ndarray:
        """An image as the models' input: float32 (C, H, W) in [0, 1] at the store's size.

        A path or bytes is decoded as `hashae index` decodes files. An array passes through when it
        already has that shape (C, H, W) in [0, 1]; uint8 pixels (H, W) or (H, W, C) of that size
        are scaled to [0, 1]. Other shapes are a DataError (resize with Pillow first).
        """
        if not isinstance(image, np.ndarray):
            return self._engine.decode(Path(image) if isinstance(image, (str, os.PathLike)) else bytes(image))
        channels, size = self.settings.channels, self.settings.image_size
        array = image
        if array.dtype == np.uint8:
            if array.ndim == 2:
                array = array[:, :, None]
            array = array.transpose(2, 0, 1).astype(np.float32) / np.float32(255) if array.ndim == 3 else array
        if array.shape != (channels, size, size):
            raise DataError(f"pixels of shape {image.shape} do not fit this store's models: give float32 ({channels}, {size}, {size}) in [0, 1] or uint8 ({size}, {size}{', 3' if channels == 3 else ''})")
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError("pixel values must lie in [0, 1] (uint8 pixels are scaled for you)")
        return array

    def encode(self, images: np.ndarray | Iterable[str | os.PathLike | bytes | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Codes and latents with the store's own models, exactly as `hashae index` makes them.

        images: float32 (n, C, H, W) in [0, 1], or any iterable of what `pixels` takes.
        Returns packed codes uint8 (n, bits / 8) and VAE means float32 (n, latent_dim).
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            batch = np.stack([self.pixels(one) for one in images]) if len(images) else images.astype(np.float32)
        else:
            batch = np.stack([self.pixels(one) for one in images])
        return self._engine.encode(batch)

    # ------------------------------------------------------------------------------------ items
    def item(self, item_id: int) -> Item:
        """One indexed item; QueryError when the id is not in this generation."""
        info = self._engine.view.items([int(item_id)]).get(int(item_id))
        if info is None:
            raise QueryError(f"no item with id {item_id} in the index (generation {self.generation})")
        return self._item(info)

    def items(self, *, label: str | None = None) -> Iterator[Item]:
        """Every indexed item by id (only those with `label` when given)."""
        ids = self.ids()
        for start in range(0, len(ids), ITEMS_PER_READ):
            chunk = ids[start : start + ITEMS_PER_READ].tolist()
            infos = self._engine.view.items(chunk)
            for item_id in chunk:
                info = infos.get(item_id)
                if info is not None and (label is None or info.label == label):
                    yield self._item(info)

    def ids(self) -> np.ndarray:
        """The ids of every indexed item, int64, ascending."""
        return np.sort(np.asarray(self._engine.view.item_ids(), dtype=np.int64))

    def codes(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored packed codes uint8 (n, bits / 8) of the items (default: all, in `ids()` order)."""
        return self._engine.view.codes_of(self._ids_or_all(ids))

    def latents(self, ids: Iterable[int] | None = None) -> np.ndarray:
        """Stored VAE means float32 (n, latent_dim) of the items (default: all, in `ids()` order)."""
        return self._engine.view.latents_of(self._ids_or_all(ids))

    def _ids_or_all(self, ids: Iterable[int] | None) -> np.ndarray:
        if ids is None:
            return self.ids()
        return np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)

    def _item(self, info: ItemInfo) -> Item:
        return Item(id=info.id, path=info.path, label=info.label, file=self._engine.file_of(info.path), size=info.size, added_at=info.added_at)

    # ------------------------------------------------------------------------- near-duplicates
    def duplicates(self, *, radius: int | None = None, latent_max: float | None = None, codes_only: bool = False) -> list[DuplicateGroup]:
        """Every group of near-duplicate items of this generation: what `hashae duplicates` lists.

        radius: the Hamming distance in bits within which two items are copies (default: the radius
        the threshold is calibrated at, for this store's code length).
        latent_max: also require a squared L2 distance between VAE means at most this (default: this
        store's own limit, measured on altered copies of its files when its models were trained and
        kept with them, index/calibration.store_threshold; the bench's where it cannot be measured).
        codes_only: group by the codes alone, without the latent check (looser: look-alikes join).
        Each group is anchored on its earliest file: group.anchor is members[0], then the other
        members nearest first, each with id, path, hamming and latent (its distances to the anchor)
        and exact (the same file content as the anchor, grouped whatever the threshold). Groups of
        one are left out; groups come earliest anchor first. Raises DuplicatesError for a radius
        outside 0..bits, a negative latent_max, or latent_max with codes_only.
        """
        chosen = duplicates_threshold(self._engine, radius=radius, latent_max=latent_max, codes_only=codes_only)
        return find_duplicate_groups(self._engine.view, threshold=chosen.threshold)

    def calibrate_duplicates(self, *, sample: int = DEFAULT_SAMPLE, radius: int | None = None, precision: float = TARGET_PRECISION) -> Calibration:
        """The latent limit measured again now on this store's own files (what `hashae duplicates
        --calibrate` does): `sample` of them altered in the near-duplicate bench's ways and encoded
        with the store's models; the largest limit at `radius` whose pairs hold `precision`. At the
        defaults it becomes the store's own threshold (what duplicates() uses); else pass it on:
        duplicates(radius=c.threshold.radius, latent_max=c.threshold.latent_max).
        Raises CalibrationError when too few files can be read or no limit reaches the precision."""
        return measure_threshold(self._engine, sample=sample, radius=radius, target=precision).calibration


def load_model(path: str | os.PathLike) -> InferenceEncoder:
    """A model folder saved by `hashae train` (or a store's models/ folder) as a numpy encoder.

    model.codes(x) -> packed uint8 (n, bits / 8); model.embed(x) -> float32 (n, code_size) (the VAE
    mean, or the code layer's activations); model.encode(x) -> both. x: float32
    (n, *model.input_shape). Raises CheckpointError for a folder that is not a saved model.
    """
    return InferenceEncoder.load(Path(path))
