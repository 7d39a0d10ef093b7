"""DDP (N processes, hashae.distributed) vs one process: wall time of the same training.

The same data, model, seed and optimiser steps (the global batch is the same; DDP cuts it into
shares), so both runs end with the same weights up to rounding. Times, each the median of --repeats:

    one process, 1 thread       fit() in this process, torch.set_num_threads(1)
    one process, N threads      fit() in this process, torch.set_num_threads(N)
    N processes (DDP, gloo)     distributed.run(fit, nproc=N), 1 thread per process

"total" is the whole call (for DDP: spawning the processes, importing torch in each, the
rendezvous, training, sending the model back); "training" is the training loop alone (the
trainer's History.seconds, rank 0's for DDP). Load average is recorded beside the numbers: on a
shared machine they move with it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py --items 4096 --epochs 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from hashae import distributed
from hashae.recipes import fit
from hashae.trainer import train_config_for
from hashae.variants import make_config


def one_run(config, x, train_config, *, nproc: int, threads: int) -> tuple[float, float]:
    """(total seconds, training-loop seconds) of one fit."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    result = distributed.run(fit, args=(config, x, train_config), nproc=nproc, device="cpu")
    return time.perf_counter() - started, result.history.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # DDP ranks: one thread each

    x = np.random.default_rng(0).random((args.items, 1, 28, 28), dtype=np.float32)
    config = make_config("hashing", input_shape=(1, 28, 28), code_size=args.bits)
    train_config = train_config_for("hashing", seed=0, device="cpu", epochs=args.epochs, batch_size=args.batch_size)
    steps = args.epochs * -(-int(args.items * (1 - train_config.val_fraction)) // args.batch_size)
    setups = {
        "one process, 1 thread": (1, 1),
        f"one process, {args.nproc} threads": (1, args.nproc),
        f"{args.nproc} processes (DDP, gloo)": (args.nproc, 1),
    }
    rows, load_before = {}, os.getloadavg()[0]
    for turn in range(args.repeats):  # setups in turns, so a load change hits all of them
        for name, (nproc, threads) in setups.items():
            rows.setdefault(name, []).append(one_run(config, x, train_config, nproc=nproc, threads=threads))
            print(f"turn {turn + 1}: {name}: total {rows[name][-1][0]:.2f}s, training {rows[name][-1][1]:.2f}s", file=sys.stderr)
    load_after = os.getloadavg()[0]

    base_total = statistics.median(t for t, _ in rows["one process, 1 thread"])
    base_train = statistics.median(s for _, s in rows["one process, 1 thread"])
    print(f"hashing model, {args.items} items of 1x28x28, {args.bits} bits, batch {args.batch_size}, {steps} steps; "
          f"{os.cpu_count()} cores, load average {load_before:.1f} before / {load_after:.1f} after; median of {args.repeats}")  # fmt: skip
    print()
    print("| setup | total s | training s | training speed-up vs 1 process, 1 thread |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        total, training = statistics.median(t for t, _ in runs), statistics.median(s for _, s in runs)
        print(f"| {name} | {total:.2f} | {training:.2f} | {base_train / training:.2f}x |")
    print()
    print(f"(total of one process, 1 thread: {base_total:.2f}s)")


if __name__ == "__main__":
    main()
