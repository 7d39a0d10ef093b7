"""The one trainer. It reads only `Output.loss` and logs `Output.terms`; it knows no variant by name."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

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
    torch.manual_seed(config.seed)
    run = _Run.start(model, x, config, pairs)
    history, best_loss, best_state, started = History(), math.inf, None, time.perf_counter()
    with task(report, f"training {name or f'{model.config.kind} model'}", total=run.total_steps) as progress:
        for epoch in range(config.epochs):
            record = run.epoch(epoch, progress)
            if len(run.val_x):
                record["val_loss"] = evaluate(model, run.val_x, device=run.device)
            history.epochs.append(record)
            if on_epoch:
                on_epoch(epoch, record)
            score = record.get("val_loss", record["loss"])
            if score < best_loss:
                best_loss, history.best_epoch = score, epoch
                if config.patience:
                    best_state = copy.deepcopy(model.state_dict())
            elif config.patience and epoch - history.best_epoch >= config.patience:
                history.stopped_early = True
                break
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

    @classmethod
    def start(cls, model: Autoencoder, x: np.ndarray, config: TrainConfig, pairs: np.ndarray | None) -> _Run:
        device = resolve_device(config.device)
        model.to(device)
        all_x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        train_ids, val_ids = _split_ids(len(all_x), config)
        pair_table = _check_pairs(pairs, len(all_x))
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_ids) / config.batch_size)
        scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
        train_x, val_x = all_x[train_ids], all_x[val_ids]
        return cls(model, config, device, all_x, train_ids, train_x, val_x, pair_table, optimizer, scheduler, steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def epoch(self, epoch: int, progress: Task) -> dict[str, float]:
        """One pass over the training items in a fresh random order; the mean loss terms."""
        self.model.train()
        size = self.config.batch_size
        sums: dict[str, float] = {}
        order = torch.randperm(len(self.train_x))
        for step in range(self.steps_per_epoch):
            rows = order[step * size : (step + 1) * size]
            out = self.step(rows, epoch=epoch, step=step)
            _accumulate(sums, out, len(rows))
            progress.advance(info=_terms_line(out.terms) if progress.report is not silent else "")
        return {k: v / len(self.train_x) for k, v in sums.items()}

    def step(self, rows: torch.Tensor, *, epoch: int, step: int) -> Output:
        """One optimiser step on the training items at `rows` (each with a random neighbour, when paired)."""
        batch = self.train_x[rows].to(self.device)
        share_done = (epoch * self.steps_per_epoch + step) / self.total_steps
        if self.pair_table is None:
            out = self.model(batch, progress=share_done)
        else:
            own = self.pair_table[self.train_ids[rows]]  # (B, k) neighbour ids in all_x
            pick = own[torch.arange(len(rows)), torch.randint(own.shape[1], (len(rows),))]
            out = self.model(batch, progress=share_done, paired=self.all_x[pick].to(self.device))
        _check_finite(out.loss, out.terms, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return out


@torch.no_grad()
def evaluate(model: Autoencoder, x: torch.Tensor, *, device: torch.device, batch_size: int = 1024) -> float:
    """Mean total loss of x in evaluation mode (no corruption, no noise)."""
    model.eval()
    total = 0.0
    for chunk in x.split(batch_size):
        total += model(chunk.to(device)).loss.item() * len(chunk)
    return total / len(x)


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
