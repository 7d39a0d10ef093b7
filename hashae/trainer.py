"""The one trainer. It reads only `Output.loss` and logs `Output.terms`; it knows no variant by name.

Inside a torch.distributed process group (hashae.distributed: `--nproc N` or torchrun) the same
trainer runs under DDP: every rank draws the same item order, takes its contiguous share of each
global batch, and the model gathers what it computes over the whole batch (hashae.variants.base:
whole_batch, per_row_random), so N processes take the steps one process takes on the union batch.
Rank 0 alone reports progress, measures the held-out loss and decides early stopping.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from hashae import distributed
from hashae.distributed import BatchShare, Context
from hashae.errors import ConfigError, TrainingError
from hashae.events import Reporter, Task, silent, task
from hashae.variants import Autoencoder, Output, lookup
from hashae.variants.fields import check_all, setting


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (a kind's own defaults: train_config_for).

    schedule: onecycle (warm up then anneal, peak lr) | cosine | constant.
    patience: stop after this many epochs without a better held-out loss and restore the best
    weights (0 = train every epoch, keep the last).
    """

    epochs: int = setting(20, positive=True)
    batch_size: int = setting(256, positive=True)
    lr: float = setting(2e-3, positive=True)
    optimizer: str = "adam"
    schedule: str = "onecycle"
    weight_decay: float = setting(0.0, at_least=0)
    val_fraction: float = setting(0.05, at_least=0)
    patience: int = setting(0, at_least=0)
    seed: int = 0
    device: str = "auto"

    LABEL: ClassVar[str] = "training"

    def __post_init__(self) -> None:
        check_all(self)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; known: onecycle, cosine, constant")
        if self.val_fraction >= 1:
            raise ConfigError(f"training: val_fraction must be in [0, 1), got {self.val_fraction}")


def train_config_for(kind: str, **fields: Any) -> TrainConfig:
    """The training settings of a kind: its config class's TRAINING over TrainConfig's defaults,
    then `fields` (seed, device, ...); a field given as None keeps the default."""
    config_class, _ = lookup(kind)
    given = {name: value for name, value in fields.items() if value is not None}
    return TrainConfig(**{**config_class.TRAINING, **given})


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay),
}


@dataclass
class History:
    """Mean loss terms per epoch (train, and `val_loss` on the held-out split when there is one)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.epochs[self.best_epoch] if self.epochs else {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for but no CUDA device is available")
    return torch.device(name)


def train(
    model: Autoencoder,
    x: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    report: Reporter | None = None,
    name: str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    pairs: np.ndarray | None = None,
) -> History:
    """Train `model` on x (n, *input_shape) float32; returns the history. Raises TrainingError on NaN.

    report: where the progress goes, as the task "training <name>" (name: e.g. "VAE"; default
    "<kind> model") counting optimiser steps, with the batch's loss terms as info.
    pairs: optional (n, k) int array, row i the indices in x of k neighbours of item i (found without
    labels, e.g. hashae.neighbours.nearest). Each step then also passes the model, as `paired`, one
    neighbour drawn at random per batch item; models that have no use for it ignore it."""
    if len(x) < 2:
        raise TrainingError(f"need at least 2 training items, got {len(x)}")
    context = distributed.current()
    if context is not None and not context.is_main:
        report = None
    torch.manual_seed(config.seed)
    run = _Run.start(model, x, config, pairs, context)
    history, best_loss, best_state, started = History(), math.inf, None, time.perf_counter()
    try:
        with task(report, f"training {name or f'{model.config.kind} model'}", total=run.total_steps) as progress:
            for epoch in range(config.epochs):
                record = run.epoch(epoch, progress)
                better, best_loss, stop = run.judge(record, best_loss=best_loss, since_best=epoch - history.best_epoch)
                history.epochs.append(record)
                if on_epoch:
                    on_epoch(epoch, record)
                if better:
                    history.best_epoch = epoch
                    if config.patience:
                        best_state = copy.deepcopy(model.state_dict())
                elif stop:
                    history.stopped_early = True
                    break
    finally:
        model.batch_share = None
    if config.patience and best_state is not None:
        model.load_state_dict(best_state)
    else:
        history.best_epoch = len(history.epochs) - 1
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


@dataclass
class _Run:
    """One training run's data, split, optimiser and schedule."""

    model: Autoencoder
    config: TrainConfig
    device: torch.device
    all_x: torch.Tensor  # (n, *input_shape)
    train_ids: torch.Tensor  # (n_train,) indices into all_x
    train_x: torch.Tensor  # (n_train, *input_shape)
    val_x: torch.Tensor  # (n_val, *input_shape)
    pair_table: torch.Tensor | None  # (n, k) neighbour ids into all_x
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    context: Context | None  # the process group under DDP; None: one process
    net: torch.nn.Module  # what the steps call: the model, or its DDP wrapper

    @classmethod
    def start(
        cls, model: Autoencoder, x: np.ndarray, config: TrainConfig, pairs: np.ndarray | None, context: Context | None
    ) -> _Run:
        device = resolve_device(config.device) if context is None else context.device
        model.to(device)
        all_x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        train_ids, val_ids = _split_ids(len(all_x), config)
        pair_table = _check_pairs(pairs, len(all_x))
        if context is not None and pair_table is not None:
            pair_table = context.broadcast(pair_table)  # rank 0's neighbours, whatever the others found
        net = model if context is None else _data_parallel(model, context, all_x[train_ids[:8]].to(device), pair_table)
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
        scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
        train_x, val_x = all_x[train_ids], all_x[val_ids]
        return cls(
            model, config, device, all_x, train_ids, train_x, val_x, pair_table, optimizer, scheduler, steps_per_epoch,
            context, net,
        )  # fmt: skip

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def epoch(self, epoch: int, progress: Task) -> dict[str, float]:
        """One pass over the training items in a fresh random order; the mean loss terms."""
        self.net.train()
        size = self.config.batch_size
        sums: dict[str, float] = {}
        order = torch.randperm(len(self.train_x))
        if self.context is not None:
            order = self.context.broadcast(order)  # every rank cuts the same global batches
        for step in range(self.steps_per_epoch):
            rows = order[step * size : (step + 1) * size]
            out, items = self.step(rows, epoch=epoch, step=step)
            if items:
                _accumulate(sums, out, items)
            progress.advance(info=_terms_line(out.terms) if progress.report is not silent else "")
        if self.context is not None:
            sums = _sum_over_ranks(sums, self.context)
        return {k: v / len(self.train_x) for k, v in sums.items()}

    def step(self, rows: torch.Tensor, *, epoch: int, step: int) -> tuple[Output, int]:
        """One optimiser step on the training items at `rows` (each with a random neighbour, when
        paired): the output and how many items this process took. Under DDP rows is the global
        batch and this rank takes its share; a batch with fewer items than ranks is taken whole by
        every rank (the same gradient on each, which DDP's mean keeps) and counted by rank 0."""
        share_done = (epoch * self.steps_per_epoch + step) / self.total_steps
        pick = None
        if self.pair_table is not None:
            own = self.pair_table[self.train_ids[rows]]  # (B, k) neighbour ids in all_x
            pick = own[torch.arange(len(rows)), torch.randint(own.shape[1], (len(rows),))]
        share, items = None, len(rows)
        if self.context is not None:
            pick = None if pick is None else self.context.broadcast(pick)
            if len(rows) >= self.context.world_size:
                share = BatchShare.of(len(rows), self.context)
                rows, pick = share.take(rows), (None if pick is None else share.take(pick))
                items = len(rows)
            elif not self.context.is_main:
                items = 0
            self.model.batch_share = share
        batch = self.train_x[rows].to(self.device)
        if pick is None:
            out = self.net(batch, progress=share_done)
        else:
            out = self.net(batch, progress=share_done, paired=self.all_x[pick].to(self.device))
        objective = out.loss if share is None else self._objective(out, share)
        if self.context is not None and not self.context.all_true(bool(torch.isfinite(objective))):
            raise TrainingError(f"loss became non-finite on a rank at epoch {epoch + 1}, step {step + 1}; lower the learning rate (--lr) or check the input data")
        _check_finite(objective, out.terms, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        self.scheduler.step()
        return out, items

    def _objective(self, out: Output, share: BatchShare) -> torch.Tensor:
        """What this rank back-propagates so that DDP's mean of the ranks' gradients is the
        gradient of the whole batch's loss: terms over the whole batch as they are (every rank
        computes the same value and sends each rank's rows their gradient), per-item means
        weighted by this rank's share of the items times the number of ranks."""
        whole = self.model.whole_batch_terms()
        weight = share.sizes[share.rank] * len(share.sizes) / share.total
        return sum(value if name in whole else weight * value for name, value in out.terms.items())

    def judge(self, record: dict[str, float], *, best_loss: float, since_best: int) -> tuple[bool, float, bool]:
        """After an epoch: the held-out loss (into record), whether this epoch is the best so far,
        the best score and whether to stop early. Under DDP rank 0 measures and decides, and every
        rank is told (so all stop together)."""
        verdict = torch.zeros(4, dtype=torch.float64)  # held-out loss, score, better, stop
        if self.context is None or self.context.is_main:
            if len(self.val_x):
                record["val_loss"] = evaluate(self.model, self.val_x, device=self.device)
            score = record.get("val_loss", record["loss"])
            better = score < best_loss
            stop = not better and bool(self.config.patience) and since_best >= self.config.patience
            verdict = torch.tensor([record.get("val_loss", math.nan), score, better, stop], dtype=torch.float64)
        if self.context is not None:
            verdict = self.context.broadcast(verdict)
            if len(self.val_x):
                record["val_loss"] = verdict[0].item()
        better, stop = bool(verdict[2]), bool(verdict[3])
        return better, (verdict[1].item() if better else best_loss), stop


@torch.no_grad()
def evaluate(model: Autoencoder, x: torch.Tensor, *, device: torch.device, batch_size: int = 1024) -> float:
    """Mean total loss of x in evaluation mode (no corruption, no noise)."""
    model.eval()
    total = 0.0
    for chunk in x.split(batch_size):
        total += model(chunk.to(device)).loss.item() * len(chunk)
    return total / len(x)


def _data_parallel(model: Autoencoder, context: Context, sample: torch.Tensor, pairs: torch.Tensor | None) -> torch.nn.Module:
    """model under DDP. Buffers are not synced before each forward (the model's running statistics
    come from the whole batch, the same on every rank). Parameters a config leaves unused (e.g. a
    gain that is off) are allowed, at the cost of DDP's search for them, when a trial step on
    `sample` finds any."""
    from torch.nn.parallel import DistributedDataParallel

    devices = [context.local_rank] if context.backend == "nccl" else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    buffers = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    unused = _has_unused_parameters(model, sample, paired=None if pairs is None else sample.flip(0))
    return DistributedDataParallel(model, device_ids=devices, find_unused_parameters=unused, **buffers)


def _has_unused_parameters(model: Autoencoder, sample: torch.Tensor, *, paired: torch.Tensor | None) -> bool:
    """Whether a training step on sample leaves a parameter without a gradient. Leaves no trace:
    random state, buffers and gradients are as they were."""
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    devices = [sample.device.index or 0] if sample.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.train()
        model(sample, progress=0.0, paired=paired).loss.backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return unused


def _sum_over_ranks(sums: dict[str, float], context: Context) -> dict[str, float]:
    """Each running sum added up over the ranks (the whole epoch's sums, as one process has them)."""
    names = list(sums)  # the same names in the same order on every rank (the same model's terms)
    totals = context.sum(torch.tensor([sums[name] for name in names], dtype=torch.float64))
    return dict(zip(names, totals.tolist()))


def _split_ids(n: int, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of n items: the same seeded split as ever."""
    n_val = int(n * config.val_fraction)
    if n_val == 0:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    return order[n_val:], order[:n_val]


def _check_pairs(pairs: np.ndarray | None, n: int) -> torch.Tensor | None:
    """The neighbour table as an int64 tensor, checked against the n training items."""
    if pairs is None:
        return None
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[0] != n or pairs.shape[1] < 1 or pairs.dtype.kind not in "iu":
        raise ConfigError(f"pairs must be an integer array (n={n}, k>=1), got {pairs.dtype} {pairs.shape}")
    if pairs.min() < 0 or pairs.max() >= n:
        raise ConfigError(f"pairs hold indices outside [0, {n})")
    return torch.from_numpy(pairs.astype(np.int64))


def _scheduler(optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        parts = ", ".join(f"{k}={v.item():.3g}" for k, v in terms.items())
        raise TrainingError(
            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} ({parts}); "
            "lower the learning rate (--lr) or check the input data"
        )


def _terms_line(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{name} {value.item():.3g}" for name, value in terms.items())


def _accumulate(sums: dict[str, float], out: Output, n: int) -> None:
    sums["loss"] = sums.get("loss", 0.0) + out.loss.item() * n
    for name, value in out.terms.items():
        sums[name] = sums.get(name, 0.0) + value.item() * n
