"""Item pictures for the page: the catalogued file decoded to a small PNG, cached.

Only catalogued items get one, read from the indexed folder by their catalogued path; a path that
would leave that folder is refused all the same.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from hashae.decode import decode_image
from hashae.errors import DataError
from hashae.index.backends.base import ItemInfo
from hashae.index.query import QueryEngine
from hashae.index.server.errors import one_line

CACHE_SIZE = 4096
MIN_SIDE, MAX_SIDE = 8, 256


class ThumbnailCache:
    """A small thread-safe LRU of PNG bytes."""

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def png(self, engine: QueryEngine, info: ItemInfo, *, side: int) -> bytes:
        """The item's thumbnail, from the cache or made now (keyed by content, so a changed file
        gets a new one)."""
        key = (info.id, info.content_hash, side)
        png = self.get(key)
        if png is None:
            png = thumbnail_png(engine, info.path, side=side)
            self.put(key, png)
        return png


def thumbnail_png(engine: QueryEngine, relative: str, *, side: int) -> bytes:
    """The catalogued file decoded (hardened) to side x side, as PNG bytes; 404 for a path outside
    the indexed folder, 410 when the file can no longer be read."""
    from hashae.images import to_pil

    root = Path(engine.settings.source_root or ".").resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(status_code=404, detail="the item's file lies outside the indexed folder")
    try:
        pixels = decode_image(path, size=side, channels=engine.settings.channels)
    except DataError as error:
        raise HTTPException(status_code=410, detail=f"the item's file can no longer be read ({one_line(error)}); re-run `hashae index`") from None
    buffer = io.BytesIO()
    to_pil(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
