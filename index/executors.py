"""Executors: map one function over work items (shards, decoded batches) and give back the results.

    with make_executor("processes", workers=2) as executor:
        for encoded in executor.map(ShardEncoder(...), shards):   # in the order of shards
            writer.add_items(...)

This is the whole seam a cluster engine has to fill (issue 11: Ray): `map(function, items)` runs
function(item) somewhere and yields the results in the order of the items, as they complete, with a
bounded number in flight. The function and the items must be picklable; the function carries its
own settings (hashae.reader.ShardReader, hashae.index.encoder.ShardEncoder) and loads what it needs
once per process. Results are the same bit for bit whichever executor runs them: the reader and the
encoder stage do not depend on batch composition or process.

    sequential  in the calling process, one item at a time (small folders; tests)
    processes   a pool of worker processes on this machine. Workers fork from a server process
                that imported only numpy, Pillow and the reader/encoder modules (never torch),
                with one BLAS thread each; they ignore Ctrl-C, which the caller handles.
    ray         tasks on a Ray cluster: a private local one, or an existing one at `address`
                (index/ray_executor.py; needs the optional extra hashae[ray], imported only here).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Protocol, TypeVar

from hashae.errors import ConfigError, HashaeError

EXECUTORS = ("auto", "sequential", "processes", "ray")
TASKS_IN_FLIGHT_PER_WORKER = 4  # queued work per worker: never idle while a batch is written, little memory held
WORKER_PRELOAD = "hashae.index.worker"  # what the worker server process imports before forking workers

Item = TypeVar("Item")
Result = TypeVar("Result")


class WorkerDied(HashaeError):
    """A worker process of an executor ended without finishing its task."""


class Executor(Protocol):
    """Runs a function over items; results come back in the order of the items."""

    name: str
    workers: int

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """function(item) for each item, yielded in order (computed ahead, a bounded number at a time)."""

    def close(self) -> None:
        """Stop the workers (pending work is dropped)."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class SequentialExecutor:
    """Everything in the calling process, one item after the other."""

    name = "sequential"
    workers = 1

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        for item in items:
            yield function(item)

    def close(self) -> None:
        pass

    def __enter__(self) -> SequentialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessExecutor:
    """A pool of `workers` local processes (started on first use, reused by every map)."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers or available_cores())
        self._pool: ProcessPoolExecutor | None = None

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        pool = self._started()
        in_flight: deque[Future] = deque()
        pending = iter(items)
        limit = self.workers * TASKS_IN_FLIGHT_PER_WORKER
        try:
            for item in pending:
                in_flight.append(pool.submit(function, item))
                if len(in_flight) >= limit:
                    break
            while in_flight:
                try:
                    result = in_flight.popleft().result()
                except BrokenProcessPool:
                    raise WorkerDied(
                        "a worker process died (out of memory?); what was written is kept: run the command again, "
                        "with fewer --workers or --executor sequential"
                    ) from None
                for item in pending:
                    in_flight.append(pool.submit(function, item))
                    break
                yield result
        finally:
            for future in in_flight:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _started(self) -> ProcessPoolExecutor:
        """The pool, with all its workers started (so none is started later, see _without_main_module)."""
        if self._pool is None:
            pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_worker_context(), initializer=_ignore_interrupts)
            with _without_main_module():
                for started in [pool.submit(os.getpid) for _ in range(self.workers)]:
                    started.result()
            self._pool = pool
        return self._pool


def make_executor(kind: str = "auto", *, workers: int | None = None, work: int = 0, auto_threshold: int = 0,
                  address: str | None = None) -> Executor:  # fmt: skip
    """The executor called `kind`. "auto": processes when there are `work` >= auto_threshold items
    of work and more than one worker to give them to, else sequential. "ray": on the Ray cluster at
    `address` (None: a private local cluster of `workers` CPUs)."""
    check_executor(kind, address=address)
    if workers is not None:
        check_workers(workers)
    if kind == "ray":
        from hashae.index.ray_executor import RayExecutor, check_ray_installed

        check_ray_installed()  # a ConfigError now, not at the first map (ray is imported then)
        return RayExecutor(address=address, workers=workers)
    if kind == "auto":
        many = (workers or available_cores()) > 1 and work >= auto_threshold
        kind = "processes" if many else "sequential"
    return ProcessExecutor(workers) if kind == "processes" else SequentialExecutor()


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_executor(kind: str, *, address: str | None = None) -> None:
    """ConfigError unless `kind` is an executor, and `address` only given with ray."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r}; use one of: {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise ConfigError("--address is the Ray cluster's address: use it with --executor ray")


def check_workers(workers: int) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    return workers


def start_worker_server() -> None:
    """Start the server process that workers fork from, now, without waiting for it: its imports
    then overlap whatever the caller does before its first ProcessExecutor.map. Harmless if unused."""
    if _worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _worker_context() -> multiprocessing.context.BaseContext:
    """forkserver where there is one (a clean server process forks each worker fast), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([WORKER_PRELOAD])
        return context
    return multiprocessing.get_context("spawn")


@contextmanager
def _without_main_module() -> Iterator[None]:
    """Start processes that do not import the caller's __main__.

    multiprocessing makes every new process import the main module (so that functions defined in a
    script can be tasks): a script or notebook that imports torch would bring torch into every
    worker, and the CLI's modules would be imported again in each. Tasks here are hashae's own
    (importable by name), so the main module is hidden from multiprocessing while workers start.
    """
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__spec__", "__file__") if hasattr(main, name)}
    try:
        if main is not None:
            main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the calling process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
