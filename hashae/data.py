"""The data layer: image folders, IDX files (Fashion-MNIST), .npy vectors, all as float32 arrays.

Every reader returns an ArrayDataset: x float32, images (n, C, H, W) in [0, 1] or vectors (n, d),
labels int64 (-1 where unknown) and the class names the labels index.

Image decoding is hardened for folders nobody has checked: any bad file becomes an
ImageDecodeError (a DataError) with a short reason ("truncated file", "not an image", ...), which
the folder readers record as Skipped and go on. Oversized images are refused before their pixels
are allocated. Nothing here touches Pillow's global settings.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hashae.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# the same classes as folder names that are safe on every file system
FASHION_MNIST_FOLDERS = tuple(name.replace("/", "_").replace(" ", "_") for name in FASHION_MNIST_CLASSES)
FASHION_MNIST_SPLITS = {"train": "train", "test": "t10k"}  # split -> file name prefix
FASHION_MNIST_INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist`"

# Pillow's default warning threshold (about 89 megapixels); larger images are refused, not decoded.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_SIZE = 4096  # largest side length decode_image produces
READ_BATCH_SIZE = 256  # images per batch in read_image_folder
CHANNEL_SAMPLE_SIZE = 64  # images looked at to detect grayscale folders

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
DIRECT_MODES = frozenset({"1", "L", "P", "RGB"})  # convert straight to L or RGB; others go via RGB
UNIT_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)  # uint8 pixel value -> [0, 1]
SMALL_ARRAY_SIZE = 1 << 20  # up to this many values, _unit_floats looks them up in UNIT_VALUES
# where Image.getexif finds an orientation (besides TIFF tags): EXIF blocks, ImageMagick text, XMP
ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
# the only Pillow decoders used: those of IMAGE_EXTENSIONS. Others (EPS runs Ghostscript, for one)
# are never reached, whatever a file's name or content.
DECODE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO
JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # formats whose decoder can scale down on load (draft)
# first bytes of the formats we read, to tell a damaged image from a file that is not one
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP"),
)

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
# Decoding one image


class ImageDecodeError(DataError):
    """An image file could not be decoded. `reason` is the short human reason ("truncated file")."""

    def __init__(self, reason: str, name: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"cannot read image {name}: {reason}" if name else f"cannot read image: {reason}")


def decode_image(
    source: str | os.PathLike | bytes, *, size: int, channels: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Decode an image file (or its bytes) into float32 (channels, size, size) with values in [0, 1].

    channels is 1 (grayscale) or 3 (RGB). The EXIF orientation is applied, transparency is
    composited on white, palette/CMYK/16-bit images are converted, animations give their first
    frame, and the image is resized (squashed, not cropped) to size x size. Images with more than
    max_pixels pixels are refused before decoding; Pillow's own global limit applies as well.

    Raises ImageDecodeError (a DataError) with a short `reason` for any file that cannot be read.
    """
    _check_image_args(size=size, channels=channels)
    with _reading(source), _open_image(source) as img:
        _check_pixel_count(img, max_pixels)
        if img.format in JPEG_FORMATS:
            img.draft("L" if channels == 1 else "RGB", (size, size))  # let libjpeg scale down
        img.load()
        _apply_orientation(img)
        return _pixels(img, size=size, channels=channels)


def image_channels_of(path: str | os.PathLike) -> int:
    """1 if the image file is grayscale (judged from its header, no pixels decoded), else 3.

    Palette images count as colour even when their palette is gray.
    Raises ImageDecodeError when the file is not a readable image.
    """
    with _reading(path), _open_image(path) as img:
        return 1 if img.mode in GRAY_MODES else 3


def has_image_extension(name: str) -> bool:
    """Whether a file name ends in one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(name)[1][1:].lower() in IMAGE_EXTENSIONS


def _check_image_args(*, size: int, channels: int) -> None:
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image size must be an integer from 1 to {MAX_IMAGE_SIZE}, got {size!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


@contextmanager
def _reading(source: str | os.PathLike | bytes) -> Iterator[None]:
    """Turn every failure while reading `source` into an ImageDecodeError with a short reason.

    Pillow's decompression-bomb warning is raised as an error here, so that a too-large image is
    refused rather than decoded; its other warnings about damaged files ("Corrupt EXIF data") are
    silenced: the file decodes or is refused, either way without noise. (catch_warnings scopes
    the filters; on Python < 3.14 they are process-wide for the duration of the call.)
    """
    name = None if isinstance(source, bytes) else os.fspath(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageDecodeError as exc:  # raised here without the file name
        raise ImageDecodeError(exc.reason, name) from exc.__cause__
    except Exception as exc:  # Pillow raises many types on bad input; Ctrl-C is not an Exception
        raise ImageDecodeError(_failure_reason(exc, source), name) from exc


def _open_image(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file")
        return Image.open(io.BytesIO(source), formats=DECODE_FORMATS)
    return Image.open(os.fspath(source), formats=DECODE_FORMATS)


def _check_pixel_count(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(f"image too large: {width}x{height} pixels")


def _apply_orientation(img: Image.Image) -> None:
    """Rotate/flip a loaded image upright as its EXIF (or XMP) orientation says, in place.

    Skipped when the image carries none of the metadata Pillow reads the orientation from, which
    saves a third of the decode time of a small PNG.
    """
    if hasattr(img, "tag_v2") or any(key in img.info for key in ORIENTATION_SOURCES):
        ImageOps.exif_transpose(img, in_place=True)


def _pixels(img: Image.Image, *, size: int, channels: int) -> np.ndarray:
    """A loaded image as float32 (channels, size, size) in [0, 1]."""
    if img.mode.startswith("I") or img.mode == "F":
        array = _high_depth_gray(img, size)  # (size, size, 1)
    else:
        img = _standard_mode(img, channels)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        array = _unit_floats(_uint8_pixels(img))
    if array.shape[2] in (2, 4):
        array = _composite_on_white(array)
    if array.shape[2] != channels:  # gray source, RGB wanted
        array = np.repeat(array, channels, axis=2)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _standard_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to L or RGB, or LA / RGBA when the image has transparency."""
    has_alpha = img.mode in ALPHA_MODES or "transparency" in img.info
    target = ("LA" if has_alpha else "L") if channels == 1 else ("RGBA" if has_alpha else "RGB")
    try:
        if has_alpha:
            if img.mode not in ("RGBA", target):
                img = img.convert("RGBA")  # applies palette or colour-key transparency
        elif img.mode not in DIRECT_MODES:
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
        return img if img.mode == target else img.convert(target)
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported colour mode {img.mode}") from exc


def _high_depth_gray(img: Image.Image, size: int) -> np.ndarray:
    """16/32-bit integer grayscale scaled by 1/65535, float grayscale taken as [0, 1]; (size, size, 1)."""
    scale = 1.0 if img.mode == "F" else 1.0 / 65535
    img = img.convert("F")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(img, dtype=np.float32) * np.float32(scale)
    return np.clip(array, 0.0, 1.0)[:, :, None]


def _uint8_pixels(img: Image.Image) -> np.ndarray:
    """An 8-bit image (L, LA, RGB, RGBA) as uint8 (H, W, bands); twice as fast as np.asarray(img)."""
    width, height = img.size
    return np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(height, width, len(img.getbands()))


def _unit_floats(array: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]; the one conversion every reader uses, so they agree bit for bit.

    A table look-up is fastest for one image, a division for a whole data set; both give x / 255
    rounded to float32.
    """
    if array.size <= SMALL_ARRAY_SIZE:
        return UNIT_VALUES.take(array)
    return np.divide(array, np.float32(255), dtype=np.float32)


def _composite_on_white(array: np.ndarray) -> np.ndarray:
    """(H, W, k + 1) colour plus alpha, in [0, 1] -> (H, W, k) over a white background."""
    colour, alpha = array[:, :, :-1], array[:, :, -1:]
    return colour * alpha + (1.0 - alpha)


def _failure_reason(exc: Exception, source: str | os.PathLike | bytes) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        return f"image too large: {pixels.group(1)} pixels" if pixels else "image too large"
    if isinstance(exc, UnidentifiedImageError):
        return _unidentified_reason(source)
    if "truncated" in str(exc).lower():
        return "truncated file"
    return "corrupt image data"  # Pillow's own words ("decoder error -2") stay in the exception chain


def _unidentified_reason(source: str | os.PathLike | bytes) -> str:
    """Why Pillow could not identify a file: empty, a damaged known format, or not an image."""
    try:
        head = source[:16] if isinstance(source, bytes) else _read_head(source, 16)
    except OSError:
        return "not an image"
    if not head:
        return "empty file"
    for signature, format_name in SIGNATURES:
        if head.startswith(signature):
            return f"truncated or corrupt {format_name} file"
    return "not an image"


def _read_head(path: str | os.PathLike, count: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(count)


# --------------------------------------------------------------------------------------------
# Image folders


@dataclass(frozen=True)
class ImageFile:
    """An image in a folder: its posix path relative to the root, and its class label.

    label is the first subfolder under the root (root/cat/x/1.png -> "cat"); None at the top level.
    """

    relpath: str
    label: str | None


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read, and the short reason why."""

    relpath: str
    reason: str


def list_images(root: str | os.PathLike) -> list[ImageFile]:
    """Every image file under root (recursive), sorted by relative path.

    Only IMAGE_EXTENSIONS count; hidden files and folders (".name") are skipped. Symlinked folders
    are followed once: a folder reached twice (a link loop, or two links to one place) is read once.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    found: list[ImageFile] = []
    root_info = root.stat()
    seen_folders = {(root_info.st_dev, root_info.st_ino)}
    pending: list[tuple[str, tuple[str, ...]]] = [(os.fspath(root), ())]
    while pending:
        folder, rel_parts = pending.pop()
        for entry in _scan_folder(folder):
            if entry.name.startswith("."):
                continue
            parts = (*rel_parts, entry.name)
            if _is_dir(entry):
                if _first_visit(entry, seen_folders):
                    pending.append((entry.path, parts))
            elif has_image_extension(entry.name) and _is_file(entry):
                found.append(ImageFile(relpath="/".join(parts), label=parts[0] if len(parts) > 1 else None))
    return sorted(found, key=lambda image: image.relpath)


def _scan_folder(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list folder %s: %s", folder, exc.strerror or exc)
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _first_visit(entry: os.DirEntry, seen_folders: set[tuple[int, int]]) -> bool:
    try:
        info = entry.stat()  # follows symlinks: identifies the real folder
    except OSError:
        return False
    identity = (info.st_dev, info.st_ino)
    if identity in seen_folders:
        return False
    seen_folders.add(identity)
    return True


def detect_channels(
    root: str | os.PathLike, files: Sequence[ImageFile] | None = None, *, sample: int = CHANNEL_SAMPLE_SIZE
) -> int:
    """1 if every readable image of an evenly spaced sample is grayscale, else 3.

    Only file headers are read. Unreadable files are ignored; 3 if none can be read.
    """
    files = list_images(root) if files is None else files
    step = max(1, len(files) // max(1, sample))
    found = []
    for image in files[::step][:sample]:
        try:
            found.append(image_channels_of(Path(root) / image.relpath))
        except DataError:
            continue
    return 1 if found and all(channels == 1 for channels in found) else 3


def class_names_of(files: Sequence[ImageFile]) -> tuple[str, ...]:
    """Sorted unique labels of `files`; label i of a dataset is class_names[i]."""
    return tuple(sorted({image.label for image in files if image.label is not None}))


def iter_image_batches(
    root: str | os.PathLike,
    files: Sequence[ImageFile],
    *,
    size: int,
    channels: int,
    batch_size: int,
) -> Iterator[tuple[list[ImageFile], np.ndarray, list[Skipped]]]:
    """Decode `files` (relative to root) in order, batch_size files at a time.

    Yields, per batch: the files that decoded, their pixels float32 (m, channels, size, size) in
    the same order, and the files that did not, each with its reason. Never stops on a bad file.
    """
    _check_image_args(size=size, channels=channels)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    root = Path(root)
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        pixels = np.empty((len(batch), channels, size, size), dtype=np.float32)
        decoded: list[ImageFile] = []
        skipped: list[Skipped] = []
        for image in batch:
            try:
                pixels[len(decoded)] = decode_image(root / image.relpath, size=size, channels=channels)
            except ImageDecodeError as exc:
                skipped.append(Skipped(image.relpath, exc.reason))
                continue
            decoded.append(image)
        yield decoded, pixels[: len(decoded)], skipped


def read_image_folder(
    root: str | os.PathLike,
    *,
    size: int,
    channels: int,
    files: Sequence[ImageFile] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[ArrayDataset, list[Skipped]]:
    """Decode every image under root (or just `files`) into a dataset, plus the files skipped.

    Labels come from the class folders (sorted unique names -> 0, 1, ...); files at the top level
    get -1, and a folder without class subfolders has class_names (). progress, if given, is
    called with the number of files just processed (good or bad), about every READ_BATCH_SIZE files.
    """
    files = list_images(root) if files is None else list(files)
    class_names = class_names_of(files)
    class_index = {name: i for i, name in enumerate(class_names)}
    x = np.empty((len(files), channels, size, size), dtype=np.float32)
    decoded: list[ImageFile] = []
    skipped: list[Skipped] = []
    batches = iter_image_batches(root, files, size=size, channels=channels, batch_size=READ_BATCH_SIZE)
    for batch_files, pixels, batch_skipped in batches:
        x[len(decoded) : len(decoded) + len(batch_files)] = pixels
        decoded += batch_files
        skipped += batch_skipped
        if progress is not None:
            progress(len(batch_files) + len(batch_skipped))
    if len(decoded) < len(files):
        x = x[: len(decoded)].copy()  # let go of the rows the skipped files would have taken
    labels = np.array([class_index.get(image.label, -1) for image in decoded], dtype=np.int64)
    dataset = ArrayDataset(
        x=x, labels=labels, class_names=class_names, paths=tuple(image.relpath for image in decoded)
    )
    return dataset, skipped


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
    x = _unit_floats(pixels)[:, None]
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
    progress: Callable[[int], None] | None = None,
    root: str | os.PathLike = FASHION_MNIST_DIR,
) -> int:
    """Write Fashion-MNIST images as PNGs: out_dir/<class folder>/<split>_<index:05d>.png.

    index is the image's position in the split; limit keeps the first `limit` images. Returns the
    number of images exported. Re-running gives the same files, byte for byte: a file that already
    holds the right bytes is left alone, others are written atomically (temporary name, rename).
    progress, if given, is called with the number of images just exported.
    """
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    images_path, labels_path = _fashion_mnist_files(split, Path(root))
    pixels = _read_idx_images(images_path)
    labels, _ = _read_idx_labels(labels_path, count=len(pixels), class_names=FASHION_MNIST_CLASSES)
    count = len(pixels) if limit is None else min(int(limit), len(pixels))
    out_dir = Path(out_dir)
    try:
        for start in range(0, count, READ_BATCH_SIZE):
            stop = min(start + READ_BATCH_SIZE, count)
            for index in range(start, stop):
                target = out_dir / FASHION_MNIST_FOLDERS[labels[index]] / f"{split}_{index:05d}.png"
                _write_if_changed(target, _png_bytes(pixels[index]))
            if progress is not None:
                progress(stop - start)
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


def load_source(source: str | os.PathLike, *, size: int = 28, channels: int | None = None) -> ArrayDataset:
    """Load a data source named on the command line.

    - a folder: its images (see read_image_folder), size x size, channels 1 or 3, or None to use 1
      when the sampled images are all grayscale. Unreadable files are dropped (logged as a
      warning); a DataError if none can be read.
    - "fashion-mnist", "fashion-mnist:train" or "fashion-mnist:test" (unless a file or folder of
      that name exists): the installed Fashion-MNIST.
    - a .npy file: feature vectors (size and channels do not apply).
    - any other file: IDX images, with labels from the sibling *-labels-idx1-ubyte file if present.
    IDX images and Fashion-MNIST are resized / given 3 channels when size / channels ask for it.
    """
    _check_image_args(size=size, channels=1 if channels is None else channels)
    path = Path(source)
    split = _fashion_mnist_split(source) if not path.exists() else None
    if split is not None:
        return _fit_images(load_fashion_mnist(split), size=size, channels=channels)
    if path.is_dir():
        return _load_image_folder(path, size=size, channels=channels)
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


def _load_image_folder(root: Path, *, size: int, channels: int | None) -> ArrayDataset:
    files = list_images(root)
    if not files:
        raise DataError(
            f"no images found in {root} (looked for .{', .'.join(IMAGE_EXTENSIONS)}; hidden files skipped)"
        )
    if channels is None:
        channels = detect_channels(root, files)
    dataset, skipped = read_image_folder(root, size=size, channels=channels, files=files)
    if skipped:
        first = skipped[0]
        if not len(dataset):
            raise DataError(
                f"none of the {len(files)} images in {root} could be read "
                f"(e.g. {first.relpath}: {first.reason})"
            )
        logger.warning(
            "skipped %d unreadable images in %s (e.g. %s: %s)",
            len(skipped),
            root,
            first.relpath,
            first.reason,
        )
    return dataset


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
