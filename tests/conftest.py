"""Shared fixtures: a small real Fashion-MNIST sample, and seeded helpers to build and train models.

The sample is read straight from Debian's dataset files with gzip + numpy (no dependency on
hashae.datasets), so the learning-core tests stay independent of the reader. Tests that need it are
skipped cleanly when the files are absent (`make data` installs them).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from hashae import trainer, variants

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_TRAIN_IMAGES = FASHION_DIR / "train-images-idx3-ubyte.gz"
N_TRAIN, N_HELDOUT = 2000, 500


def read_idx_images(path: Path, n: int) -> np.ndarray:
    """The first n images of an IDX3 file as float32 (n, 1, rows, cols) in [0, 1]."""
    with gzip.open(path, "rb") as handle:
        header = np.frombuffer(handle.read(16), dtype=">i4")
        magic, count, rows, cols = (int(v) for v in header)
        if magic != 2051 or count < n:
            raise ValueError(f"{path}: not an IDX3 image file with at least {n} images")
        pixels = np.frombuffer(handle.read(n * rows * cols), dtype=np.uint8)
    return (pixels.reshape(n, 1, rows, cols) / np.float32(255)).astype(np.float32)


@pytest.fixture(scope="session")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the first 2,000 and the next 500 Fashion-MNIST training images,
    float32 (n, 1, 28, 28) in [0, 1]. The file is already shuffled, so the slices are mixed.
    Shared by the whole session: never modify them in place."""
    if not FASHION_TRAIN_IMAGES.is_file():
        pytest.skip(f"Fashion-MNIST not installed ({FASHION_TRAIN_IMAGES}); run `make data`")
    images = read_idx_images(FASHION_TRAIN_IMAGES, N_TRAIN + N_HELDOUT)
    return images[:N_TRAIN], images[N_TRAIN:]


@pytest.fixture(scope="session")
def build_model() -> Callable[..., variants.Autoencoder]:
    """build_model(kind, seed=0, **fields): a freshly initialised model, its weights fixed by the seed."""

    def build(kind: str, *, seed: int = 0, **fields: Any) -> variants.Autoencoder:
        torch.manual_seed(seed)
        return variants.create(variants.make_config(kind, **fields))

    return build


@pytest.fixture(scope="session")
def fit_model() -> Callable[..., trainer.History]:
    """fit_model(model, x, epochs=..., **train_config): normalise, then train quietly (no
    validation split unless asked). Small batches and a brisk learning rate suit the tiny samples."""

    def fit(model: variants.Autoencoder, x: np.ndarray, *, epochs: int, **overrides: Any) -> trainer.History:
        settings = {"batch_size": 64, "lr": 5e-3, "val_fraction": 0.0, "seed": 0, "device": "cpu", **overrides}
        model.fit_normalisation(x)
        return trainer.train(model, x, trainer.TrainConfig(epochs=epochs, **settings))

    return fit


# ------------------------------------------------------------------------------------------------
# Index pipeline, CLI and crash tests (tests/test_pipeline.py, test_cli.py, test_crash.py):
# one small image folder indexed once per session (1 epoch); tests copy it rather than retrain.

import io as _io
import shutil as _shutil
import struct as _struct
import zlib as _zlib

LIBRARY_SIZE = 150  # images in the session's indexed folder
INDEX_EPOCHS = 1


def _draw_shape(rng: np.random.Generator, kind: int, size: int = 28):
    """A seeded drawing of shape `kind` (0..4) in light gray on black, at a random place and size."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    x0, y0 = (int(v) for v in rng.integers(1, size // 3, 2))
    x1, y1 = (int(v) for v in rng.integers(2 * size // 3, size - 1, 2))
    fill = int(rng.integers(150, 256))
    if kind == 0:
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == 1:
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif kind == 2:
        draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=fill)
    elif kind == 3:
        draw.line((x0, y0, x1, y1), fill=fill, width=3)
        draw.line((x0, y1, x1, y0), fill=fill, width=3)
    else:
        draw.rectangle((x0, (y0 + y1) // 2 - 2, x1, (y0 + y1) // 2 + 2), fill=fill)
    return img


def draw_images(folder: Path, n: int, *, seed: int = 0, classes: bool = True, prefix: str = "img") -> list[str]:
    """Write n seeded drawings as PNG into folder (in one subfolder per shape when classes);
    returns their relative paths."""
    rng = np.random.default_rng(seed)
    written = []
    for i in range(n):
        kind = i % 5
        rel = f"shape{kind}/{prefix}_{i:04d}.png" if classes else f"{prefix}_{i:04d}.png"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _draw_shape(rng, kind).save(path)
        written.append(rel)
    return written


def write_library(folder: Path, n: int) -> None:
    """n Fashion-MNIST images in class subfolders (drawn shapes when the data set is not installed)."""
    from hashae.datasets import export_fashion_mnist

    if FASHION_TRAIN_IMAGES.is_file():
        export_fashion_mnist(folder, split="train", limit=n)
    else:
        draw_images(folder, n)


def png_declaring_size(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb); its data is tiny."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = _zlib.crc32(tag + body) & 0xFFFFFFFF
        return _struct.pack(">I", len(body)) + tag + body + _struct.pack(">I", crc)

    header = _struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", _zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _image_bytes(img, fmt: str, **options: Any) -> bytes:
    buffer = _io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_odd_files(folder: Path, *, sub: str = "odd", seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """Unusual but valid images and broken files, written into folder/sub (folder itself when sub is "").

    Returns (relative paths of the valid ones, {relative path of a broken one: a word its skip
    reason must contain})."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    noise = lambda: Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")  # noqa: E731
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees
    frames = [noise().convert("P") for _ in range(3)]
    png, jpeg = _image_bytes(noise(), "PNG"), _image_bytes(noise(), "JPEG", quality=90)
    good = {
        "palette.png": _image_bytes(noise().quantize(16), "PNG"),
        "alpha.png": _image_bytes(noise().convert("RGBA"), "PNG"),
        "gray_alpha.png": _image_bytes(noise().convert("LA"), "PNG"),
        "cmyk.jpg": _image_bytes(noise().convert("CMYK"), "JPEG"),
        "gray16.png": _image_bytes(Image.fromarray(rng.integers(0, 65536, (40, 30)).astype(np.uint16)), "PNG"),
        "animated.gif": _image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "rotated.jpg": _image_bytes(noise(), "JPEG", exif=exif.tobytes()),
    }
    bad = {
        "empty.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "text.jpg": (b"not an image at all\n" * 20, "not an image"),
        "bomb.png": (png_declaring_size(100_000, 100_000), "too large"),
    }
    target = folder / sub if sub else folder
    target.mkdir(parents=True, exist_ok=True)
    for name, data in good.items():
        (target / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (target / name).write_bytes(data)
    (target / "notes.txt").write_text("not an image extension: never listed\n")
    rel = (lambda name: f"{sub}/{name}") if sub else (lambda name: name)
    return sorted(rel(name) for name in good), {rel(name): word for name, (_, word) in bad.items()}


def index_quietly(store: Path, folder: Path, **options: Any):
    """index_folder in-process, on the CPU, with 1 training epoch unless told otherwise."""
    from hashae.index.pipeline import IndexOptions, index_folder

    settings = {"epochs": INDEX_EPOCHS, "device": "cpu", **options}
    return index_folder(store, folder, IndexOptions(**settings))


def store_state(store: Path) -> dict[str, tuple[int, bytes, str | None]]:
    """The newest committed generation as {path: (id, code bytes, label)}."""
    from hashae.index.backends.local.store import LocalStore as Store

    with Store.open(store) as opened:
        snapshot = opened.snapshot()
        ids, codes, _ = opened.catalogue.items_visible(snapshot.gen)
        items = opened.catalogue.items(ids.tolist())
        return {items[int(i)].path: (int(i), codes[row].tobytes(), items[int(i)].label) for row, i in enumerate(ids)}


def image_paths(folder: Path) -> set[str]:
    """Relative paths of the image files under folder (what the store should hold, bad ones aside)."""
    from hashae.folders import list_images

    return {image.relpath for image in list_images(folder)}


@pytest.fixture(scope="session")
def indexed_library(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, store): LIBRARY_SIZE images in class subfolders, indexed once (1 epoch). Read only:
    tests that change either take library_copy."""
    base = tmp_path_factory.mktemp("library")
    folder, store = base / "images", base / "store"
    write_library(folder, LIBRARY_SIZE)
    index_quietly(store, folder)
    return folder, store


@pytest.fixture
def library_copy(tmp_path, indexed_library) -> tuple[Path, Path]:
    """A private copy of the indexed folder and its store (file mtimes kept, so nothing looks changed)."""
    folder, store = indexed_library
    _shutil.copytree(folder, tmp_path / "images")
    _shutil.copytree(store, tmp_path / "store")
    return tmp_path / "images", tmp_path / "store"


@pytest.fixture(scope="session")
def indexed_flat_folder(tmp_path_factory) -> tuple[Path, Path, list[str], dict[str, str]]:
    """(folder, store, odd valid files, {broken file: reason word}): a flat folder (no class
    subfolders, so no labels) of drawn images and the files of write_odd_files, indexed from scratch."""
    base = tmp_path_factory.mktemp("flat")
    folder, store = base / "images", base / "store"
    draw_images(folder, 60, seed=1, classes=False)
    good, bad = write_odd_files(folder, sub="")
    index_quietly(store, folder)
    return folder, store, good, bad


@pytest.fixture
def one_faiss_thread():
    """FAISS's OpenMP threads spin against each other on a busy 2-core machine; tiny tests need none."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
