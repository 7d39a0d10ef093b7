"""Decoding one image file, hardened for folders nobody has checked.

decode_image turns a file (or its bytes) into float32 (channels, size, size) in [0, 1]; any bad file
becomes an ImageDecodeError (a DataError) with a short reason ("truncated file", "not an image",
...). Oversized images are refused before their pixels are allocated, only the decoders of
IMAGE_EXTENSIONS ever run, and nothing here touches Pillow's global settings.

The folder reader (hashae.reader) tries hashae.fastpng first for plain PNGs; it gives exactly the
pixels decode_image gives, and everything it does not handle comes here.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hashae.errors import ConfigError, DataError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
_EXTENSION_SET = frozenset(IMAGE_EXTENSIONS)
# Pillow's default warning threshold (about 89 megapixels); larger images are refused, not decoded.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_SIZE = 4096  # largest side length decode_image produces

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
DIRECT_MODES = frozenset({"1", "L", "P", "RGB"})  # convert straight to L or RGB; others go via RGB
UNIT_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)  # uint8 pixel value -> [0, 1]
SMALL_ARRAY_SIZE = 1 << 20  # up to this many values, unit_floats looks them up in UNIT_VALUES
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
    max_pixels pixels are refused before decoding; Pillow's own global limit applies as well. A
    path is read only if it is a regular file (a FIFO or a device is refused, never waited on).

    Raises ImageDecodeError (a DataError) with a short `reason` for any file that cannot be read.
    """
    return decode_image_with_channels(source, size=size, channels=channels, max_pixels=max_pixels)[0]


def decode_image_with_channels(
    source: str | os.PathLike | bytes, *, size: int, channels: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, int]:
    """decode_image's pixels, and the channels of the file itself: 1 if it is grayscale (the rule
    of image_channels_of), else 3. One decode tells both, so a reader need not open files twice."""
    check_image_args(size=size, channels=channels)
    with loaded_image(source, max_pixels=max_pixels, draft=("L" if channels == 1 else "RGB", size)) as (img, header_mode):
        return _pixels(img, size=size, channels=channels), 1 if header_mode in GRAY_MODES else 3


def image_pixels(img: Image.Image, *, size: int, channels: int) -> np.ndarray:
    """An image already in memory as decode_image gives the same image read from a lossless file:
    float32 (channels, size, size) in [0, 1]."""
    check_image_args(size=size, channels=channels)
    return _pixels(img, size=size, channels=channels)


@contextmanager
def loaded_image(
    source: str | os.PathLike | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, draft: tuple[str | None, int] | None = None
) -> Iterator[tuple[Image.Image, str]]:
    """The image of a file (or its bytes) decoded and turned upright (EXIF orientation), with the
    mode its header declared: (image, header mode). The hardened path every decode takes: regular
    files only, images over max_pixels refused before their pixels are allocated, every failure
    (in the body too) an ImageDecodeError with a short reason.

    draft=(mode, side) lets a JPEG decoder scale down towards side x side while decoding; mode
    None keeps an L or RGB image's mode and takes RGB otherwise.
    """
    with _reading(source), _open_image(source) as img:
        header_mode = img.mode
        _check_pixel_count(img, max_pixels)
        if draft is not None and img.format in JPEG_FORMATS:
            mode, side = draft
            img.draft(mode or (img.mode if img.mode in ("L", "RGB") else "RGB"), (side, side))
        img.load()
        _apply_orientation(img)
        yield img, header_mode


def image_channels_of(path: str | os.PathLike) -> int:
    """1 if the image file is grayscale (judged from its header, no pixels decoded), else 3.

    Palette images count as colour even when their palette is gray.
    Raises ImageDecodeError when the file is not a readable image.
    """
    with _reading(path), _open_image(path) as img:
        return 1 if img.mode in GRAY_MODES else 3


def has_image_extension(name: str) -> bool:
    """Whether a file name ends in one of IMAGE_EXTENSIONS (case-insensitive; as os.path.splitext
    sees extensions: leading dots are not one)."""
    head, dot, extension = name.rpartition(".")
    return bool(dot) and bool(head.lstrip(".")) and extension.lower() in _EXTENSION_SET


def check_image_args(*, size: int, channels: int) -> None:
    """ConfigError unless size is an integer side length from 1 to MAX_IMAGE_SIZE and channels 1 or 3."""
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


@contextmanager
def _open_image(source: str | os.PathLike | bytes) -> Iterator[Image.Image]:
    """The image (header read, pixels not yet decoded); a path is opened only if it is a regular file."""
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file")
        with Image.open(io.BytesIO(source), formats=DECODE_FORMATS) as img:
            yield img
        return
    with open_regular_file(source) as file, Image.open(file, formats=DECODE_FORMATS) as img:
        yield img


@contextmanager
def open_regular_file(path: str | os.PathLike) -> Iterator[io.BufferedReader]:
    """Open path for reading if it is a regular file (symbolic links followed), else ImageDecodeError.

    The file is opened non-blocking and checked on the open descriptor, so a FIFO, a device or a
    socket (even one swapped in after the folder was listed) is refused at once instead of hanging
    the reader. OSError (missing file, permission denied) is left to the caller.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        kind = not_regular_reason(os.fstat(fd).st_mode)
        if kind:
            raise ImageDecodeError(kind)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def not_regular_reason(mode: int) -> str | None:
    """None for a regular file's st_mode, else the short reason it is not read ("is a directory")."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    kind = next((name for test, name in kinds if test(mode)), "not a file")
    return f"not a regular file ({kind})"


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
        img = standard_mode(img, channels)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        array = unit_floats(_uint8_pixels(img))
    if array.shape[2] in (2, 4):
        array = _composite_on_white(array)
    if array.shape[2] != channels:  # gray source, RGB wanted
        array = np.repeat(array, channels, axis=2)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def standard_mode(img: Image.Image, channels: int) -> Image.Image:
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


def unit_floats(array: np.ndarray) -> np.ndarray:
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
    except (OSError, ImageDecodeError):
        return "not an image"
    if not head:
        return "empty file"
    for signature, format_name in SIGNATURES:
        if head.startswith(signature):
            return f"truncated or corrupt {format_name} file"
    return "not an image"


def _read_head(path: str | os.PathLike, count: int) -> bytes:
    with open_regular_file(path) as file:
        return file.read(count)
