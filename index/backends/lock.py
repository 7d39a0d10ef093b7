"""The write lock of a store folder (every backend): one writer at a time, across processes."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hashae.index.backends.base import StoreError


@contextmanager
def write_lock(path: Path, *, store: Path) -> Iterator[None]:
    """Exclusive, non-blocking flock on path, with our pid written inside while we hold it.

    The kernel drops the lock when its holder dies, so a killed writer never blocks the next one.
    StoreError (naming the holder's pid) when another writer, in this process or another, holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StoreError(
                f"another hashae writer (pid {holder}) is updating the store at {store}; "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
