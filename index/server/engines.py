"""The generation being served, and its swap for a newer one while `hashae index` writes.

A background thread looks at the store every `refresh_interval` seconds; when a newer generation
is committed it builds a whole new QueryEngine (loading the committed files; the writer's
half-written work is invisible to it), warms it, and swaps the reference. Every request takes the
reference once and answers from that engine alone, so an answer never mixes generations, and
readers take no lock.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

from typing import Any

import numpy as np

from hashae.errors import HashaeError
from hashae.index.backends.base import StoreBackend
from hashae.index.duplicates import Threshold, duplicates_document
from hashae.index.query import QueryEngine, single_faiss_thread

logger = logging.getLogger("hashae.server")

_thread_state = threading.local()
DUPLICATE_THRESHOLDS_KEPT = 4  # near-duplicate answers kept per generation (one per threshold)


@dataclass
class Served:
    """One generation as the server serves it: the engine and what the page needs of its items."""

    engine: QueryEngine
    ids: np.ndarray  # int64 (n,), sorted: every item of the generation
    labels: np.ndarray  # object (n,): the label of each id (None where unlabelled)
    label_counts: dict[str, int]
    loaded_at: str = field(default_factory=lambda: now())
    _duplicates: dict[Threshold, Future] = field(default_factory=dict, repr=False)  # threshold -> its document
    _duplicates_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def gen(self) -> int:
        return self.engine.view.gen

    def contains(self, item_id: int) -> bool:
        row = np.searchsorted(self.ids, item_id)
        return bool(row < len(self.ids) and self.ids[row] == item_id)

    def label_of(self, item_id: int) -> str | None:
        """The label of an item of this generation (None when unlabelled or not in it)."""
        row = np.searchsorted(self.ids, item_id)
        return self.labels[row] if row < len(self.ids) and self.ids[row] == item_id else None

    def duplicates(self, threshold: Threshold) -> dict[str, Any]:
        """index/duplicates.duplicates_document of this generation (a generation never changes, so
        the answer for a threshold is computed once, by the first request; requests for the same
        threshold meanwhile wait for it: a whole store takes seconds); the last
        DUPLICATE_THRESHOLDS_KEPT thresholds asked are kept. Treat the document as read-only."""
        with self._duplicates_lock:
            answer = self._duplicates.get(threshold)
            computing = answer is None
            if computing:
                answer = self._duplicates[threshold] = Future()
                while len(self._duplicates) > DUPLICATE_THRESHOLDS_KEPT:
                    del self._duplicates[next(iter(self._duplicates))]  # the oldest asked (its waiters keep it)
        if computing:
            try:
                answer.set_result(duplicates_document(self.engine.view, threshold=threshold))
            except BaseException as err:
                with self._duplicates_lock:  # a failure is not kept: the next request tries again
                    if self._duplicates.get(threshold) is answer:
                        del self._duplicates[threshold]
                answer.set_exception(err)
        return answer.result()


class EngineHolder:
    """The engine being served, swapped for a new one when a newer generation is committed."""

    def __init__(self, store: StoreBackend, *, refresh_interval: float = 1.0) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self.refreshes = 0
        self.last_refresh_error: str | None = None
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._served = self._build()

    @property
    def served(self) -> Served:
        """The current generation; take it once per request and use only it."""
        return self._served

    def start(self) -> None:
        """Look for newer generations in a background thread until stop()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="hashae-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def refresh(self) -> bool:
        """Swap in the newest committed generation if it is newer; True when it moved."""
        with self._build_lock:
            if not self._served.engine.view.is_stale():
                return False
            served = self._build()
            if served.gen <= self._served.gen:
                return False
            self._served = served  # one reference assignment: requests see the old or the new
            self.refreshes += 1
            logger.info("now serving generation %d (%d items)", served.gen, len(served.ids))
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
                self.last_refresh_error = None
            except HashaeError as error:  # a store mid-change or damaged: keep serving the old one
                self.last_refresh_error = str(error)
                logger.warning("could not load the newer generation (still serving the old): %s", error)
            except Exception as error:  # the watcher must not die; say why and retry next tick
                self.last_refresh_error = f"{type(error).__name__}: {error}"
                logger.exception("unexpected error while loading a newer generation")

    def _build(self) -> Served:
        one_faiss_thread_here()
        engine = QueryEngine.open(self.store)
        ids = np.sort(engine.view.item_ids().astype(np.int64))
        items = engine.view.items(ids.tolist())
        labels = np.array([items[i].label if i in items else None for i in ids.tolist()], dtype=object)
        counts: dict[str, int] = {}
        for label in labels:
            key = "(none)" if label is None else str(label)
            counts[key] = counts.get(key, 0) + 1
        if len(ids):  # warm up: build the hash tables (and compile kernels) before serving
            engine.query_id(int(ids[0]), mode="hamming", k=min(10, len(ids)))
        return Served(engine, ids, labels, dict(sorted(counts.items())))


def one_faiss_thread_here() -> None:
    """FAISS's thread count is per thread: set it once in each thread that searches.

    One query is far too small to split, and requests already run on a thread pool: an OpenMP team
    per query only adds barrier waits, which cost 40-300 ms per query on a busy machine.
    """
    if not getattr(_thread_state, "faiss_single", False):
        single_faiss_thread()
        _thread_state.faiss_single = True


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
