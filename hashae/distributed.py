"""Training on several processes with torch.distributed (DDP): gloo on CPU, nccl on CUDA.

Two ways in, one training path (hashae.trainer notices the process group and trains under DDP):

    hashae train DATA --nproc 2 ...         run(): spawns the processes on this machine, which meet
                                            on 127.0.0.1 at a free port; rank 0's result comes back
    torchrun --nproc_per_node 2 $(which hashae) train DATA ...      run() joins torchrun's group
    torchrun --nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT ...  (machines)

Every rank holds the whole training set (what a DistributedSampler assumes) and draws the same
order; each global batch is cut into contiguous per-rank shares (BatchShare). The hashing model's
batch statistics and in-batch negatives are gathered over the whole global batch with gradient
(BatchShare.gather), and its per-item random draws are made for the whole global batch and cut the
same way (BatchShare.per_row), so N processes take the same steps as one process on the union batch.
"""

from __future__ import annotations

import atexit
import os
import pickle
import socket
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hashae.errors import ConfigError, HashaeError, TrainingError
from hashae.events import Reporter
from hashae.launcher import TORCHRUN_VARIABLES, main_process, under_torchrun  # noqa: F401 (this module's API too)

LOOPBACK = "127.0.0.1"
RENDEZVOUS_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Context:
    """This process's place in a process group of two or more."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress, decides early stopping and writes checkpoints."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """The device this rank trains on: its own GPU under nccl, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's value of tensor (same shape and dtype on every rank), on the tensor's device."""
        moved = tensor.to(self.device).contiguous()
        dist.broadcast(moved, src=0)
        return moved.to(tensor.device)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of tensor over the ranks, on the tensor's device."""
        moved = tensor.to(self.device).contiguous()
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def all_true(self, flag: bool) -> bool:
        """Whether flag is true on every rank."""
        return bool(self.sum(torch.tensor([0.0 if flag else 1.0])).item() == 0)


def current() -> Context | None:
    """The process group this process trains in; None outside one (or in a group of one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return Context(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank, backend=dist.get_backend())


def backend_for(device: str) -> str:
    """nccl when training on CUDA (device cuda, or auto with a GPU), gloo otherwise."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def run(
    fn: Callable[..., Any],
    *,
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    nproc: int = 1,
    device: str = "auto",
    report: Reporter | None = None,
) -> Any:
    """fn(*args, report=..., **kwargs) trained on nproc processes; what it returns on rank 0.

    Under torchrun (nproc must then be 1): joins torchrun's process group and runs fn here, on
    every rank; each rank gets its own result (check main_process() before writing anything).
    With nproc > 1: spawns nproc processes on this machine (fn and its arguments must pickle; numpy
    arrays travel as shared memory), rank 0's progress events come to `report` and its result
    comes back. Otherwise fn runs here, as it always did."""
    kwargs = dict(kwargs or {})
    if under_torchrun():
        if nproc > 1:
            raise ConfigError("--nproc starts its own processes: run without torchrun, or leave --nproc at 1 under torchrun")
        join_torchrun(device=device)
        return fn(*args, report=report if main_process() else None, **kwargs)
    if nproc <= 1:
        return fn(*args, report=report, **kwargs)
    return _spawn(fn, args, kwargs, nproc=nproc, backend=backend_for(device), report=report)


def in_turn(fn: Callable[..., Any], calls: list[dict[str, Any]], *, report: Reporter | None = None, **shared: Any) -> list[Any]:
    """[fn(**shared, **call, report=report) for each call]: several trainings in one run()."""
    return [fn(**shared, **call, report=report) for call in calls]


def join_torchrun(*, device: str = "auto") -> Context:
    """Join the process group torchrun describes in the environment (once per process)."""
    if not dist.is_initialized():
        backend = backend_for(device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=RENDEZVOUS_TIMEOUT)
        atexit.register(_leave)
    context = current()
    assert context is not None, "torchrun started a group of one"
    return context


# -- a batch cut into per-rank shares --------------------------------------------------------------


def share_sizes(n: int, world_size: int) -> list[int]:
    """How many of n rows each rank takes: contiguous shares, the first n % world_size one larger."""
    base, extra = divmod(n, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


@dataclass(frozen=True)
class BatchShare:
    """This rank's contiguous share of one global batch (rows in rank order make the whole batch)."""

    sizes: tuple[int, ...]
    rank: int

    @classmethod
    def of(cls, n: int, context: Context) -> BatchShare:
        return cls(sizes=tuple(share_sizes(n, context.world_size)), rank=context.rank)

    @property
    def start(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def stop(self) -> int:
        return self.start + self.sizes[self.rank]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's part of rows (the whole batch's, same on every rank)."""
        return rows[self.start : self.stop]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The whole batch's rows (total, ...) from this rank's (own, ...), in rank order, with
        gradient: each rank's rows get the gradient every rank's loss sends them (summed)."""
        from torch.distributed.nn.functional import all_gather

        biggest = max(self.sizes)
        padded = t if len(t) == biggest else torch.cat([t, t.new_zeros(biggest - len(t), *t.shape[1:])])
        with warnings.catch_warnings():  # "deprecated" in torch 2.13, but the one gather with gradient
            warnings.simplefilter("ignore", FutureWarning)
            pieces = all_gather(padded)
        return torch.cat([piece[:size] for piece, size in zip(pieces, self.sizes)])

    def per_row(self, fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """fn(t) for an fn that draws random numbers row by row: applied to the whole batch's shape
        (this rank's rows in their place, zeros elsewhere) so each rank draws what one process
        would, and this rank's rows of the result kept. fn must treat rows independently."""
        before = t.new_zeros(self.start, *t.shape[1:])
        after = t.new_zeros(self.total - self.stop, *t.shape[1:])
        return fn(torch.cat([before, t, after]))[self.start : self.stop]


# -- spawning processes on this machine --------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def loopback_interface() -> str | None:
    """The name of the loopback network interface (lo, lo0), for gloo to bind to."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in ("lo", "lo0") if name in names), None)


def _spawn(fn, args, kwargs, *, nproc: int, backend: str, report: Reporter | None) -> Any:
    """Run fn on nproc spawned ranks; rank 0's result (or the first rank's error) comes back."""
    from torch import multiprocessing

    if backend == "nccl" and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc {nproc} on CUDA needs {nproc} GPUs, this machine has {torch.cuda.device_count()}")
    events = multiprocessing.get_context("spawn").SimpleQueue() if report else None
    shared_args, shared_kwargs = _to_shared(args), _to_shared(kwargs)
    with tempfile.TemporaryDirectory(prefix="hashae-ddp-") as scratch:
        setup = _Setup(nproc=nproc, backend=backend, port=free_port(), scratch=scratch, events=events)
        processes = _start_in(scratch, multiprocessing, _rank_main, (setup, fn, shared_args, shared_kwargs), nproc)
        try:
            while not processes.join(timeout=0.2):
                _forward_events(events, report)
        except Exception as failure:
            raise _rank_error(Path(scratch), failure) from None
        finally:
            _forward_events(events, report)
        return pickle.loads((Path(scratch) / "result.pkl").read_bytes())


def _start_in(scratch: str, multiprocessing, target, args: tuple, nproc: int):
    """torch's start_processes with its per-rank error files (pytorch-errorfile-*.pickle, which a
    failed rank writes and nobody removes) made in scratch, so they go when scratch goes. The parent
    names them while starting the ranks; tempfile.tempdir is restored at once."""
    saved, tempfile.tempdir = tempfile.tempdir, scratch
    try:
        return multiprocessing.start_processes(target, args=args, nprocs=nproc, join=False, start_method="spawn")
    finally:
        tempfile.tempdir = saved


@dataclass(frozen=True)
class _Setup:
    nproc: int
    backend: str
    port: int
    scratch: str
    events: Any


def _rank_main(rank: int, setup: _Setup, fn, args, kwargs) -> None:
    """One spawned rank: join the group on 127.0.0.1, run fn, rank 0 writes the result."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(setup.nproc))
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(setup.port))
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // setup.nproc))
    if setup.backend == "gloo" and loopback_interface() and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback_interface()
    if setup.backend == "nccl":
        torch.cuda.set_device(rank)
    init = f"tcp://{LOOPBACK}:{setup.port}"
    dist.init_process_group(setup.backend, init_method=init, rank=rank, world_size=setup.nproc, timeout=RENDEZVOUS_TIMEOUT)
    try:
        report = setup.events.put if (rank == 0 and setup.events is not None) else None
        result = fn(*_from_shared(args), report=report, **_from_shared(kwargs))
        if rank == 0:
            (Path(setup.scratch) / "result.pkl").write_bytes(pickle.dumps(result))
    except BaseException as error:
        _keep_error(Path(setup.scratch) / f"error-{rank}.pkl", error)
        raise
    finally:
        dist.destroy_process_group()


def _keep_error(path: Path, error: BaseException) -> None:
    try:
        path.write_bytes(pickle.dumps(error))
    except Exception:
        path.write_bytes(pickle.dumps(TrainingError(f"{type(error).__name__}: {error}")))


def _rank_error(scratch: Path, failure: Exception) -> HashaeError:
    """The error to raise for a failed run: the error of the rank that failed first (the others
    mostly lost their peer), as its own HashaeError when it raised one."""
    first = getattr(failure, "error_index", None)
    path = scratch / f"error-{first}.pkl"
    paths = [path] if path.exists() else sorted(scratch.glob("error-*.pkl"))
    cause = pickle.loads(paths[0].read_bytes()) if paths else failure
    if isinstance(cause, HashaeError):
        return cause
    text = str(cause).strip()
    return TrainingError(f"distributed training failed: {type(cause).__name__}: {text.splitlines()[-1] if text else ''}")


def _forward_events(events, report: Reporter | None) -> None:
    while events is not None and report is not None and not events.empty():
        report(events.get())


def _to_shared(value: Any) -> Any:
    """numpy arrays (top level of args/kwargs) as torch tensors, which travel as shared memory."""
    if isinstance(value, tuple):
        return tuple(_to_shared(item) for item in value)
    if isinstance(value, dict):
        return {key: _to_shared(item) for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.dtype != object:
        return _SharedArray(torch.from_numpy(np.ascontiguousarray(value)))
    return value


def _from_shared(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_from_shared(item) for item in value)
    if isinstance(value, dict):
        return {key: _from_shared(item) for key, item in value.items()}
    return value.tensor.numpy() if isinstance(value, _SharedArray) else value


@dataclass(frozen=True)
class _SharedArray:
    tensor: torch.Tensor


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
