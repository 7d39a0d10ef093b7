"""Data sets as float32 arrays: IDX files (Fashion-MNIST), .npy vectors and image folders.

Every loader returns an ArrayDataset: x float32, images (n, C, H, W) in [0, 1] or vectors (n, d),
labels int64 (-1 where unknown) and the class names the labels index. Image folders are read
through hashae.reader (the one reader the index uses too); load_source picks the loader for a
source named on the command line. export_fashion_mnist writes the data set as an image folder.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hashae.decode import IMAGE_EXTENSIONS, check_image_args, has_image_extension, unit_floats
from hashae.errors import ConfigError, DataError
from hashae.events import Reporter, message, task
from hashae.folders import ImageFile, Skipped, class_names_of, scan_folder
from hashae.reader import DEFAULT_MAX_FILE_SIZE, DecodedBatch, Shard, make_shards, probe_channels, probe_files, read_shard

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# the same classes as folder names that are safe on every file system
FASHION_MNIST_FOLDERS = tuple(name.replace("/", "_").replace(" ", "_") for name in FASHION_MNIST_CLASSES)
FASHION_MNIST_SPLITS = {"train": "train", "test": "t10k"}  # split -> file name prefix
FASHION_MNIST_INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist`"
FOLDER_BATCH_SIZE = 256  # files per batch when a folder is read into a dataset
EXPORT_BATCH_SIZE = 256  # images written between two progress events

IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 1 << 36  # 64 GiB: a header claiming more is corrupt
READ_CHUNK_BYTES = 1 << 24
GZIP_MAGIC = b"\x1f\x8b"
# how an IDX labels file is named after its images file (both spellings MNIST files are found in)
IDX_LABEL_NAMING = (
    ("-images-idx3-ubyte", "-labels-idx1-ubyte"),
    ("-images.idx3-ubyte", "-labels.idx1-ubyte"),
)


# --------------------------------------------------------------------------------------------
# The dataset


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Items as one float32 array, with labels and (for folders) the relative path of each item.

    x: float32, images (n, C, H, W) with values in [0, 1], or vectors (n, d).
    labels: int64 (n,), -1 where the label is unknown.
    class_names: label i is class_names[i]; () when there are no labels.
    paths: relative posix paths for items read from a folder, else None.
    """

    x: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] = ()
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim not in (2, 4):
            raise DataError(
                f"dataset x must be a float32 array (n, d) or (n, C, H, W), got {_describe(self.x)}"
            )
        n = self.x.shape[0]
        if (
            not isinstance(self.labels, np.ndarray)
            or self.labels.dtype != np.int64
            or self.labels.shape != (n,)
        ):
            raise DataError(
                f"dataset labels must be an int64 array of shape ({n},), got {_describe(self.labels)}"
            )
        if n and (self.labels.min() < -1 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"dataset labels must lie in [-1, {len(self.class_names)}) (one per class name)")
        if self.paths is not None and len(self.paths) != n:
            raise DataError(f"dataset has {n} items but {len(self.paths)} paths")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) for images, (d,) for vectors."""
        return tuple(self.x.shape[1:])

    def subset(self, index: np.ndarray | Sequence[int] | slice | int) -> ArrayDataset:
        """The items at `index` (integer positions, a boolean mask or a slice), as a new dataset."""
        positions = np.atleast_1d(np.arange(len(self))[index])
        paths = None if self.paths is None else tuple(self.paths[i] for i in positions)
        return ArrayDataset(
            x=self.x[positions], labels=self.labels[positions], class_names=self.class_names, paths=paths
        )


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (told by its first bytes), as a numpy array.

    The magic number, element type, dimensions and exact payload length are checked; the array
    comes back in native byte order. Raises DataError naming the file when anything is off.
    """
    path = Path(path)
    try:
        with _open_maybe_gzipped(path) as file:
            dtype, shape = _read_idx_header(file, path)
            nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
            if nbytes > MAX_IDX_BYTES:
                raise DataError(f"{path}: IDX header declares {nbytes} bytes of data, too large to be real")
            payload = _read_up_to(file, nbytes)
            trailing = file.read(1)
    except FileNotFoundError as exc:
        raise DataError(f"no such file: {path}") from exc
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or gzip data damaged or cut short
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(payload) < nbytes:
        raise DataError(f"{path}: truncated IDX file: expected {nbytes} bytes of data, found {len(payload)}")
    if trailing:
        raise DataError(f"{path}: IDX file has data past the {nbytes} bytes its header declares")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _open_maybe_gzipped(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as file:
        is_gzip = file.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_idx_header(file: io.BufferedIOBase, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = file.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = magic[2], magic[3]
    if dtype_code not in IDX_DTYPES:
        raise DataError(f"{path}: IDX file has unknown element type code 0x{dtype_code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX file declares no dimensions")
    dims = file.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    return IDX_DTYPES[dtype_code], struct.unpack(f">{ndim}I", dims)


def _read_up_to(file: io.BufferedIOBase, nbytes: int) -> bytes:
    """Read nbytes, or fewer at end of file, in chunks: memory follows the data, not the header's claim."""
    chunks = []
    remaining = nbytes
    while remaining > 0:
        chunk = file.read(min(remaining, READ_CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def load_idx_dataset(
    images: str | os.PathLike, labels: str | os.PathLike | None = None, *, class_names: Sequence[str] = ()
) -> ArrayDataset:
    """Images from an IDX file of uint8 (n, rows, cols) as x (n, 1, rows, cols) float32 in [0, 1].

    labels, if given, is an IDX file of n non-negative integers. Without class_names the classes
    are named "0", "1", ... up to the largest label.
    """
    pixels = _read_idx_images(images)
    x = unit_floats(pixels)[:, None]
    if labels is None:
        return ArrayDataset(x=x, labels=np.full(len(x), -1, dtype=np.int64))
    label_array, class_names = _read_idx_labels(labels, count=len(x), class_names=tuple(class_names))
    return ArrayDataset(x=x, labels=label_array, class_names=class_names)


def _read_idx_images(path: str | os.PathLike) -> np.ndarray:
    pixels = read_idx(path)
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise DataError(f"{path}: expected uint8 images (n, rows, cols), got {_describe(pixels)}")
    return pixels


def _read_idx_labels(
    path: str | os.PathLike, *, count: int, class_names: tuple[str, ...]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """count labels int64 from an IDX file, and the class names (given, or "0", "1", ...)."""
    values = read_idx(path)
    if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) != count:
        raise DataError(f"{path}: expected {count} integer labels, got {_describe(values)}")
    labels = values.astype(np.int64)
    if count and labels.min() < 0:
        raise DataError(f"{path}: labels must not be negative")
    if not class_names:
        class_names = tuple(str(i) for i in range(int(labels.max()) + 1 if count else 0))
    if count and labels.max() >= len(class_names):
        raise DataError(f"{path}: label {int(labels.max())} but only {len(class_names)} class names")
    return labels, class_names


def idx_labels_path(images: str | os.PathLike) -> Path | None:
    """The labels file beside an IDX images file, if there is one.

    x-images-idx3-ubyte[.gz] -> x-labels-idx1-ubyte[.gz] (also with ".idx3" spelled with a dot).
    """
    images = Path(images)
    for images_part, labels_part in IDX_LABEL_NAMING:
        if images_part in images.name:
            candidate = images.with_name(images.name.replace(images_part, labels_part))
            return candidate if candidate.is_file() else None
    return None


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def load_fashion_mnist(split: str = "train", *, root: str | os.PathLike = FASHION_MNIST_DIR) -> ArrayDataset:
    """The Fashion-MNIST train (60000) or test (10000) split.

    x (n, 1, 28, 28) float32 in [0, 1], labels 0..9 naming FASHION_MNIST_CLASSES.
    """
    images, labels = _fashion_mnist_files(split, Path(root))
    return load_idx_dataset(images, labels, class_names=FASHION_MNIST_CLASSES)


def export_fashion_mnist(
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    limit: int | None = None,
    report: Reporter | None = None,
    root: str | os.PathLike = FASHION_MNIST_DIR,
) -> int:
    """Write Fashion-MNIST images as PNGs: out_dir/<class folder>/<split>_<index:05d>.png.

    index is the image's position in the split; limit keeps the first `limit` images. Returns the
    number of images exported. Re-running gives the same files, byte for byte: a file that already
    holds the right bytes is left alone, others are written atomically (temporary name, rename).
    Progress goes to report as the task "exporting".
    """
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    images_path, labels_path = _fashion_mnist_files(split, Path(root))
    pixels = _read_idx_images(images_path)
    labels, _ = _read_idx_labels(labels_path, count=len(pixels), class_names=FASHION_MNIST_CLASSES)
    count = len(pixels) if limit is None else min(int(limit), len(pixels))
    out_dir = Path(out_dir)
    try:
        with task(report, "exporting", total=count) as exporting:
            for start in range(0, count, EXPORT_BATCH_SIZE):
                stop = min(start + EXPORT_BATCH_SIZE, count)
                for index in range(start, stop):
                    target = out_dir / FASHION_MNIST_FOLDERS[labels[index]] / f"{split}_{index:05d}.png"
                    _write_if_changed(target, _png_bytes(pixels[index]))
                exporting.advance(stop - start)
    except OSError as exc:
        raise DataError(f"cannot write images to {out_dir}: {exc}") from exc
    return count


def _fashion_mnist_files(split: str, root: Path) -> tuple[Path, Path]:
    if split not in FASHION_MNIST_SPLITS:
        raise DataError(
            f"unknown Fashion-MNIST split {split!r}; use one of: {', '.join(FASHION_MNIST_SPLITS)}"
        )
    prefix = FASHION_MNIST_SPLITS[split]
    files = tuple(
        _find_gz_or_plain(root / f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1")
    )
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found ({', '.join(missing)} missing); {FASHION_MNIST_INSTALL_HINT}"
        )
    return files


def _find_gz_or_plain(stem: Path) -> Path:
    gzipped = stem.with_name(stem.name + ".gz")
    return stem if stem.is_file() and not gzipped.is_file() else gzipped  # the .gz when neither exists


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write data to path atomically, unless path already holds exactly these bytes."""
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden: list_images ignores it
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Vectors


def read_npy(path: str | os.PathLike) -> ArrayDataset:
    """Feature vectors from a .npy file holding one 2-D real array (n, d), as float32, labels -1.

    Pickled and object arrays are never loaded (allow_pickle=False); NaN or infinite values,
    other shapes, and non-numeric types are refused with a DataError.
    """
    path = Path(path)
    array = _load_npy_array(path)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a 2-D numeric array (n, d), got {_describe(array)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: the array is empty (shape {array.shape})")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
        x = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: contains NaN or infinite values (first in row {int(np.argmin(finite))})")
    return ArrayDataset(x=x, labels=np.full(len(x), -1, dtype=np.int64))


def _load_npy_array(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataError(f"no such file: {path}") from exc
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(
                f"{path}: holds pickled or object data, which is never loaded; save a numeric array"
            ) from exc
        raise DataError(f"{path}: not a valid .npy file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        loaded.close()
        raise DataError(f"{path}: is an .npz archive; save one array with numpy.save")
    return loaded


# --------------------------------------------------------------------------------------------
# One entry point


def load_source(
    source: str | os.PathLike, *, size: int = 28, channels: int | None = None, report: Reporter | None = None
) -> ArrayDataset:
    """Load a data source named on the command line.

    - a folder: its images (see load_image_folder), size x size, channels 1 or 3, or None to use 1
      when the sampled images are all grayscale. Unreadable files are dropped (reported as a
      message); a DataError if none can be read.
    - "fashion-mnist", "fashion-mnist:train" or "fashion-mnist:test" (unless a file or folder of
      that name exists): the installed Fashion-MNIST.
    - a .npy file: feature vectors (size and channels do not apply).
    - any other file: IDX images, with labels from the sibling *-labels-idx1-ubyte file if present.
    IDX images and Fashion-MNIST are resized / given 3 channels when size / channels ask for it.
    """
    check_image_args(size=size, channels=1 if channels is None else channels)
    path = Path(source)
    split = _fashion_mnist_split(source) if not path.exists() else None
    if split is not None:
        return _fit_images(load_fashion_mnist(split), size=size, channels=channels)
    if path.is_dir():
        return _dataset_of_folder(path, size=size, channels=channels, report=report)
    if not path.exists():
        raise DataError(f"no such file or folder: {source}")
    if path.suffix.lower() == ".npy":
        return read_npy(path)
    if has_image_extension(path.name):
        raise DataError(f"{path} is a single image; pass the folder that holds the images")
    return _fit_images(load_idx_dataset(path, idx_labels_path(path)), size=size, channels=channels)


def _fashion_mnist_split(source: str | os.PathLike) -> str | None:
    name, _, split = str(source).partition(":")
    if name.lower() != "fashion-mnist":
        return None
    return split or "train"


@dataclass(frozen=True)
class FolderData:
    """An image folder read into a dataset: the dataset (items in path order), the files that
    could not be used with their reasons, and the channels the images were decoded with."""

    dataset: ArrayDataset
    skipped: list[Skipped]
    channels: int


def load_image_folder(
    root: str | os.PathLike,
    *,
    size: int,
    channels: int | None = None,
    files: Sequence[ImageFile] | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    report: Reporter | None = None,
) -> FolderData:
    """Read every image under root (or just `files`) through hashae.reader into a dataset.

    channels None: 1 when the probed images are all grayscale, else 3 (hashae.reader.probe_channels;
    the probed files are read once, not again). Labels come from the class folders (sorted unique
    names -> 0, 1, ...); files at the top level get -1, and a folder without class subfolders has
    class_names (). Progress goes to report as the task "reading".
    """
    check_image_args(size=size, channels=1 if channels is None else channels)
    listing = scan_folder(root) if files is None else None
    files = list(listing.files if listing is not None else files)
    skipped = list(listing.skipped) if listing is not None else []
    batches: list[DecodedBatch] = []
    to_read = files
    with task(report, "reading", total=len(files)) as reading:
        if channels is None:
            probed = probe_files(files)
            channels, probe = probe_channels(Shard(os.fspath(root), tuple(probed)), size=size, max_file_size=max_file_size)
            batches.append(probe)
            reading.advance(len(probed))
            probed_paths = {image.relpath for image in probed}
            to_read = [image for image in files if image.relpath not in probed_paths]
        for shard in make_shards(root, to_read, shard_size=FOLDER_BATCH_SIZE):
            batches.extend(read_shard(shard, size=size, channels=channels, max_file_size=max_file_size))
            reading.advance(len(shard))
    dataset = _dataset_in_path_order(batches, class_names_of(files), size=size, channels=channels)
    skipped += [item for batch in batches for item in batch.skipped]
    return FolderData(dataset=dataset, skipped=sorted(skipped, key=lambda item: item.relpath), channels=channels)


def _dataset_in_path_order(batches: list[DecodedBatch], class_names: tuple[str, ...], *, size: int, channels: int) -> ArrayDataset:
    records = [record for batch in batches for record in batch.files]
    order = sorted(range(len(records)), key=lambda i: records[i].relpath)
    x = np.concatenate([batch.pixels for batch in batches]) if records else np.empty((0, channels, size, size), np.float32)
    if order != list(range(len(order))):
        x = x[order]
    class_index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([class_index.get(records[i].label, -1) for i in order], dtype=np.int64)
    return ArrayDataset(x=x, labels=labels, class_names=class_names, paths=tuple(records[i].relpath for i in order))


def _dataset_of_folder(root: Path, *, size: int, channels: int | None, report: Reporter | None) -> ArrayDataset:
    files = scan_folder(root).files
    if not files:
        raise DataError(
            f"no images found in {root} (looked for .{', .'.join(IMAGE_EXTENSIONS)}; hidden files skipped)"
        )
    loaded = load_image_folder(root, size=size, channels=channels, files=files, report=report)
    if loaded.skipped:
        first = loaded.skipped[0]
        if not len(loaded.dataset):
            raise DataError(
                f"none of the {len(files)} images in {root} could be read (e.g. {first.relpath}: {first.reason})"
            )
        message(report, f"skipped {len(loaded.skipped)} unreadable images in {root} (e.g. {first.relpath}: {first.reason})")
    return loaded.dataset


def _fit_images(dataset: ArrayDataset, *, size: int, channels: int | None) -> ArrayDataset:
    """Resize (n, C, H, W) images to size x size and repeat / average channels to `channels`."""
    x = dataset.x
    if x.shape[2:] != (size, size):
        x = np.stack([_resize_channels(image, size) for image in x])
    if channels is not None and x.shape[1] != channels:
        x = np.repeat(x, channels, axis=1) if x.shape[1] == 1 else _luminance(x)
    if x is dataset.x:
        return dataset
    return ArrayDataset(x=x, labels=dataset.labels, class_names=dataset.class_names, paths=dataset.paths)


def _resize_channels(image: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] -> (C, size, size), bicubic, clipped to [0, 1]."""
    planes = [
        np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.BICUBIC)) for plane in image
    ]
    return np.clip(np.stack(planes), 0.0, 1.0).astype(np.float32)


def _luminance(x: np.ndarray) -> np.ndarray:
    """(n, 3, H, W) RGB -> (n, 1, H, W) with the ITU-R 601-2 weights Pillow uses for "L"."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.einsum("nchw,c->nhw", x, weights)[:, None].astype(np.float32)
