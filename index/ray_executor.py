"""The Ray executor: `hashae index FOLDER --executor ray [--address HOST:6379]` (issue 11).

The same seam as index/executors.py: map(function, items) runs function(item) as a Ray task per
item (a shard of the sorted file list, or a decoded batch) and yields the results in the order of
the items, with a bounded number of tasks in flight, to the single writer in the calling process.
The function is hashae's own picklable task (hashae.index.encoder.ShardEncoder: hashae's hardened
reader, then the numpy encoder stage; torch is never imported in the workers). A corrupt file is a
skipped row with its reason inside its batch, never a failed task; a task that fails anyway (a
worker lost, an I/O error) is retried up to TASK_RETRIES times before the run fails.

    with RayExecutor() as executor:                       # a private local cluster, stopped at the end
        for encoded in executor.map(task, shards): ...
    with RayExecutor(address="head:6379") as executor:    # an existing cluster (ray start --head)
        ...

Without an address hashae starts a private local cluster on first use (address="local", never the
RAY_ADDRESS or last-started cluster; token auth off; its sockets and logs in a fresh folder under the
system temp dir) and stops it on close. If this process is already connected to Ray (ray.init was
called by the caller), that connection is used and left open.

On a cluster, every node must see the image folder and the store's model folders at the same paths
(a shared file system): tasks carry paths, not bytes, and each worker loads the two models once.
Ray's processes listen on all network interfaces: run clusters on a trusted network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from hashae.errors import ConfigError
from hashae.index.executors import available_cores

TASK_RETRIES = 3  # a failed task (worker lost, exception) runs again this many times
TASKS_IN_FLIGHT_PER_CPU = 2  # queued tasks per cluster CPU: workers never idle while a batch is written
LONGEST_TEMP_DIR = 40  # Ray's socket paths under it must stay within AF_UNIX's 107 bytes
OBJECT_STORE_BYTES = 256 << 20  # the private cluster's shared memory (results are small; decoded batches ~3 MB)
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}  # one task per CPU

Item = TypeVar("Item")
Result = TypeVar("Result")


class RayExecutor:
    """Tasks on a Ray cluster: a private local one (address None) or the one at `address`."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        """address: "HOST:PORT" of a running cluster (None: a private local cluster with `workers`
        CPUs, default one per core). workers is then updated to the cluster's CPUs once started."""
        self.address = address
        self.workers = workers or available_cores()
        self._ray: Any = None  # the ray module once connected
        self._owns_connection = False
        self._temp_dir: str | None = None
        self._run_task: Any = None  # _run_task as a Ray remote function, once connected

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """function(item) for each item as Ray tasks, yielded in the order of the items."""
        ray = self._started()
        run = self._run_task
        function_ref = ray.put(function)  # shipped once, not with every task
        in_flight: deque = deque()
        pending = iter(items)
        limit = max(1, self.workers * TASKS_IN_FLIGHT_PER_CPU)
        try:
            for item in pending:
                in_flight.append(run.remote(function_ref, item))
                if len(in_flight) >= limit:
                    break
            while in_flight:
                result = ray.get(in_flight.popleft())
                for item in pending:
                    in_flight.append(run.remote(function_ref, item))
                    break
                yield result
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Stop the private cluster (or disconnect from the given one); pending tasks are dropped."""
        if self._ray is not None and self._owns_connection:
            self._ray.shutdown()
        self._ray, self._owns_connection = None, False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _started(self) -> Any:
        """The ray module, connected: to the caller's connection, the given cluster or a new private one."""
        if self._ray is not None:
            return self._ray
        if self.address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster: no token written to ~/.ray
        ray = import_ray()
        if not ray.is_initialized():
            self._connect(ray)
            self._owns_connection = True
        self._ray = ray
        self._run_task = ray.remote(_run_task).options(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=True)
        if self.address is not None or not self._owns_connection:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return ray

    def _connect(self, ray: Any) -> None:
        common = dict(runtime_env={"env_vars": ONE_THREAD}, log_to_driver=False, logging_level=logging.WARNING)
        if self.address is not None:
            try:
                ray.init(address=self.address, **common)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ConfigError(
                    f"cannot reach the Ray cluster at {self.address} ({error}); start it with `ray start --head` or leave out --address"
                ) from error
            return
        self._temp_dir = tempfile.mkdtemp(prefix="hashae-ray-", dir=_short_temp_dir())
        ray.init(
            address="local", num_cpus=self.workers, object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False, _temp_dir=self._temp_dir, **common,
        )  # fmt: skip


def check_ray_installed() -> None:
    """ConfigError, saying how to install it, unless Ray can be imported (it is not imported here)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: pip install 'hashae[ray]'")


def import_ray() -> Any:
    """The ray module, or a ConfigError saying how to install it."""
    check_ray_installed()
    import ray

    return ray


def _short_temp_dir() -> str:
    """The system temp dir, or /tmp when its path is too long for the cluster's socket paths."""
    base = tempfile.gettempdir()
    return "/tmp" if len(base) > LONGEST_TEMP_DIR and os.path.isdir("/tmp") else base


def _run_task(function: Callable[[Any], Any], item: Any) -> Any:
    """One task on a Ray worker (a module-level function: workers import it by name)."""
    return function(item)
