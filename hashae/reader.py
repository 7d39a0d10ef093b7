"""The one reader of image folders: shards of files in, decoded batches out.

    listing = scan_folder(root)                                   # hashae.folders
    for shard in make_shards(root, listing.files, shard_size=1024):
        for batch in read_shard(shard, size=28, channels=1):      # DecodedBatch
            batch.pixels, batch.files, batch.skipped

A shard is a sorted slice of a folder's image files (relative paths, with the size and mtime the
listing saw). Reading it opens each file once, refuses what is not a regular file or is larger
than max_file_size before reading it, hashes the bytes it read (blake2b, 16 bytes) and decodes them:
plain PNGs through hashae.fastpng, everything else through hashae.decode (Pillow). A file that
cannot be used becomes a Skipped with its reason, carried by its batch, so every executor and
every caller counts the same files. Training and encoding both read through here, so a run reads
and decodes each file once.

Pixels are float32 (n, channels, size, size) in [0, 1]: exactly what decode_image gives for each
file, so an image queried alone is decoded as it was when indexed.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from hashae.decode import ImageDecodeError, check_image_args, decode_image_with_channels, not_regular_reason
from hashae.errors import ConfigError
from hashae.folders import CHANNEL_SAMPLE_SIZE, ImageFile, Skipped, evenly_spaced

DEFAULT_MAX_FILE_SIZE = 64 << 20  # bytes; larger files are refused unread (--max-file-size)
HASH_CHUNK_BYTES = 1 << 20  # hash_file reads this much at a time
HASH_DIGEST_BYTES = 16


@dataclass(frozen=True)
class Shard:
    """A sorted slice of the image files under root (paths relative to it)."""

    root: str
    files: tuple[ImageFile, ...]

    def __len__(self) -> int:
        return len(self.files)


class FileRecord(NamedTuple):
    """What reading a file found: its size and mtime (of the open file), content hash and label.
    (A named tuple: batches of them travel between processes, and tuples pickle fastest.)"""

    relpath: str
    size: int
    mtime_ns: int
    content_hash: str
    label: str | None


@dataclass(frozen=True, eq=False)
class DecodedBatch:
    """Decoded files and the files that could not be used.

    pixels: float32 (n, channels, size, size) in [0, 1], row i the pixels of files[i].
    source_channels: uint8 (n,), 1 where the file itself is grayscale, else 3.
    skipped: the files of the same shard that could not be used, with their reasons.
    """

    pixels: np.ndarray
    files: tuple[FileRecord, ...]
    skipped: tuple[Skipped, ...]
    source_channels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    def as_gray(self) -> DecodedBatch:
        """This batch of grayscale files, decoded with 3 equal channels, with 1 channel."""
        if self.pixels.shape[1] != 1 and (self.source_channels != 1).any():
            raise ConfigError("as_gray: the batch holds colour images")
        return replace(self, pixels=np.ascontiguousarray(self.pixels[:, :1]))


def make_shards(root: str | os.PathLike, files: Sequence[ImageFile], *, shard_size: int) -> list[Shard]:
    """files (in their order) cut into shards of shard_size files."""
    if not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {shard_size!r}")
    root = os.fspath(root)
    return [Shard(root, tuple(files[start : start + shard_size])) for start in range(0, len(files), shard_size)]


def read_shard(
    shard: Shard,
    *,
    size: int,
    channels: int,
    batch_size: int | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> Iterator[DecodedBatch]:
    """Read and decode a shard's files in order, batch_size at a time (None: the whole shard at once).

    Never stops on a bad file: it goes into its batch's skipped list with the reason.
    """
    check_image_args(size=size, channels=channels)
    check_max_file_size(max_file_size)
    step = batch_size or max(1, len(shard))
    for start in range(0, len(shard.files), step):
        yield _read_files(shard.root, shard.files[start : start + step], size=size, channels=channels, max_file_size=max_file_size)


@dataclass(frozen=True)
class ShardReader:
    """read_shard with its settings fixed, as one picklable function of a shard: the task an
    executor runs (hashae.index.executors). Returns the whole shard as one batch."""

    size: int
    channels: int
    max_file_size: int = DEFAULT_MAX_FILE_SIZE

    def __call__(self, shard: Shard) -> DecodedBatch:
        return next(read_shard(shard, size=self.size, channels=self.channels, max_file_size=self.max_file_size))


def probe_channels(shard: Shard, *, size: int, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> tuple[int, DecodedBatch]:
    """Read a shard to decide a folder's channels: 1 when every readable file is grayscale, else 3
    (3 when none can be read). Returns the channels and the shard decoded with them, so the
    files read to decide are not read again."""
    batch = next(read_shard(shard, size=size, channels=3, max_file_size=max_file_size))
    if len(batch) and (batch.source_channels == 1).all():
        return 1, batch.as_gray()
    return 3, batch


def probe_files(files: Sequence[ImageFile], *, sample: int = CHANNEL_SAMPLE_SIZE) -> list[ImageFile]:
    """The files probe_channels looks at: up to `sample` spread evenly over the folder."""
    return evenly_spaced(files, sample)


def check_max_file_size(max_file_size: int) -> int:
    """max_file_size if it is a positive integer (bytes), else ConfigError."""
    if not isinstance(max_file_size, (int, np.integer)) or isinstance(max_file_size, bool) or max_file_size < 1:
        raise ConfigError(f"the file size limit must be a positive number of bytes, got {max_file_size!r}")
    return int(max_file_size)


def content_hash(data: bytes) -> str:
    """The content hash the store records: blake2b, 16 bytes, hex."""
    return hashlib.blake2b(data, digest_size=HASH_DIGEST_BYTES).hexdigest()


def hash_file(path: str | os.PathLike) -> str:
    """content_hash of a file's bytes, read a chunk at a time (a huge file never sits in memory).

    Raises ImageDecodeError for what is not a regular file, OSError when it cannot be read.
    """
    digest = hashlib.blake2b(digest_size=HASH_DIGEST_BYTES)
    fd, _ = _open_regular(path)
    try:
        while chunk := os.read(fd, HASH_CHUNK_BYTES):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def read_file(path: str | os.PathLike, *, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most max_file_size bytes, and its stat (taken on the open file).

    Raises ImageDecodeError with the reason for a file that is not read: not a regular file (a
    FIFO is refused at once, never waited on), or too large (refused before reading); OSError
    when it cannot be opened or read.
    """
    fd, info = _open_regular(path)
    try:
        if info.st_size > max_file_size:
            raise ImageDecodeError(_too_large(info.st_size, max_file_size))
        data = os.read(fd, info.st_size + 1)  # one read for a regular file that did not grow
        if len(data) > info.st_size:
            data += _read_rest(fd, limit=max_file_size + 1 - len(data))
            if len(data) > max_file_size:
                raise ImageDecodeError(_too_large(len(data), max_file_size))
        return data, info
    finally:
        os.close(fd)


def _open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """An open descriptor of path and its stat, if it is a regular file (opened non-blocking, checked
    on the descriptor); ImageDecodeError with the reason otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    reason = not_regular_reason(info.st_mode)
    if reason:
        os.close(fd)
        raise ImageDecodeError(reason)
    return fd, info


def _read_rest(fd: int, *, limit: int) -> bytes:
    chunks = []
    while limit > 0 and (chunk := os.read(fd, min(limit, HASH_CHUNK_BYTES))):
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"file too large: {_mib(size)} (the limit is {_mib(limit)}; see --max-file-size)"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size} bytes"


def _read_files(root: str, files: Sequence[ImageFile], *, size: int, channels: int, max_file_size: int) -> DecodedBatch:
    pixels = np.empty((len(files), channels, size, size), dtype=np.float32)
    source_channels = np.empty(len(files), dtype=np.uint8)
    records: list[FileRecord] = []
    skipped: list[Skipped] = []
    for image in files:
        path = f"{root}/{image.relpath}"
        try:
            data, info = read_file(path, max_file_size=max_file_size)
        except ImageDecodeError as error:
            skipped.append(Skipped(image.relpath, error.reason, image.size, image.mtime_ns))
            continue
        except OSError as error:
            skipped.append(Skipped(image.relpath, _os_reason(error), image.size, image.mtime_ns))
            continue
        try:
            source_channels[len(records)] = decode_into(data, pixels[len(records)])
        except ImageDecodeError as error:
            skipped.append(Skipped(image.relpath, error.reason, info.st_size, info.st_mtime_ns))
            continue
        records.append(FileRecord(image.relpath, info.st_size, info.st_mtime_ns, content_hash(data), image.label))
    n = len(records)
    if n < len(files):
        pixels, source_channels = pixels[:n].copy(), source_channels[:n].copy()
    return DecodedBatch(pixels=pixels, files=tuple(records), skipped=tuple(skipped), source_channels=source_channels)


def decode_into(data: bytes, out: np.ndarray) -> int:
    """Decode an image file's bytes into out, float32 (channels, size, size), as decode_image does.

    Plain PNGs take the fast path; the rest, and every damaged file, go through Pillow. Returns
    the channels of the file itself (1 grayscale, 3 colour); ImageDecodeError when it cannot be used.
    """
    found = _plain_png_decoder()(data, out)
    if found is None:
        channels, size, _ = out.shape
        out[...], found = decode_image_with_channels(data, size=size, channels=channels)
    return found


@functools.cache
def _plain_png_decoder() -> Callable[[bytes, np.ndarray], int | None]:
    """hashae.fastpng's decoder, imported on first use: numba costs a process ~0.3 s to import,
    which a process that only hands shards to workers never pays."""
    from hashae.fastpng import decode_plain_png_into

    return decode_plain_png_into


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"cannot read the file ({error.strerror or error})"

