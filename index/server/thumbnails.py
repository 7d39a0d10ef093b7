"""Item pictures for the page: thumbnails made from the catalogued original file, cached, and the
original itself.

Only catalogued items get one, read from the indexed folder by their catalogued path; a path that
would leave that folder (a `..` or a link pointing out) is refused all the same. A thumbnail keeps
the original's colours and proportions, fits a square of the asked side and is never enlarged;
PNG, or JPEG when the original is a JPEG. The file is decoded with the indexer's hardened reader
(index/pictures.py).
"""

from __future__ import annotations

import io
import mimetypes
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from PIL import Image

from hashae.decode import JPEG_FORMATS, has_image_extension
from hashae.errors import DataError
from hashae.index.backends.base import ItemInfo
from hashae.index.pictures import shrunk_picture
from hashae.index.query import QueryEngine
from hashae.index.server.errors import one_line

CACHE_BYTES = 64 * 1024 * 1024  # the cache's whole budget
MIN_SIDE, MAX_SIDE = 8, 1024
DEFAULT_SIDE = 256  # what the page asks for: sharp on a 2x screen at the card's ~150 px
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Picture:
    """Encoded image bytes and their media type."""

    data: bytes
    media_type: str


class ThumbnailCache:
    """A thread-safe LRU of encoded thumbnails, bounded by their total bytes."""

    def __init__(self, capacity_bytes: int = CACHE_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self.size_bytes = 0
        self._data: OrderedDict[Any, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Picture | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value: Picture) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            self.size_bytes -= len(old.data) if old else 0
            self._data[key] = value
            self.size_bytes += len(value.data)
            while self.size_bytes > self.capacity_bytes and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self.size_bytes -= len(dropped.data)

    def thumbnail(self, engine: QueryEngine, info: ItemInfo, *, side: int) -> Picture:
        """The item's thumbnail, from the cache or made now (keyed by content, so a changed file
        gets a new one)."""
        key = (info.id, info.content_hash, side)
        picture = self.get(key)
        if picture is None:
            picture = thumbnail_of(original_path(engine, info), side=side)
            self.put(key, picture)
        return picture


def original_path(engine: QueryEngine, info: ItemInfo) -> Path:
    """The catalogued file's path inside the indexed folder; 404 for a path that leaves it (or a
    file that is not an image by its name), 410 when it is gone."""
    root = Path(engine.settings.source_root or ".").resolve()
    path = (root / info.path).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(status_code=404, detail="the item's file lies outside the indexed folder")
    if not has_image_extension(path.name):  # a link renamed since indexing to point at something else
        raise HTTPException(status_code=404, detail=f"the item's file {info.path} is no longer an image file; re-run `hashae index`")
    if not path.is_file():
        raise HTTPException(status_code=410, detail=f"the item's file {info.path} is gone; re-run `hashae index`")
    return path


def original_media_type(path: Path) -> str:
    """The media type of an original, from its name (every indexed extension is an image type)."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def thumbnail_of(path: Path, *, side: int) -> Picture:
    """The file decoded (hardened) and shrunk to fit side x side with its proportions kept; 410 when
    it can no longer be read."""
    try:
        shown, file_format = shrunk_picture(path, side=side)
    except DataError as error:
        raise HTTPException(status_code=410, detail=f"the item's file can no longer be read ({one_line(error)}); re-run `hashae index`") from None
    return _encoded(shown, jpeg=file_format in JPEG_FORMATS and shown.mode in ("L", "RGB"))


def _encoded(img: Image.Image, *, jpeg: bool) -> Picture:
    buffer = io.BytesIO()
    if jpeg:
        img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return Picture(buffer.getvalue(), "image/jpeg")
    img.save(buffer, format="PNG", optimize=False)
    return Picture(buffer.getvalue(), "image/png")
