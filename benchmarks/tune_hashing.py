"""Tune the default semantic-hashing autoencoder on Fashion-MNIST (protocol of BENCHMARK.md).

Trains without labels on the 60,000 train images (pixels / 255), evaluates 1,000 test queries
numpy.random.default_rng(0).choice(10000, 1000, replace=False) against the 60,000 database, and
prints one table row per run: config, training seconds (neighbour search included), mAP@1000,
P@r<=2, empty-ball share, recall@10, R10@100.

Times: "train s" is wall-clock, "cpu s" process CPU time (fit: training, calibration and the
neighbour search); on a shared machine run with --threads 1 and read the CPU column.

Every option defaults to the product default (variants.make_config / trainer.train_config_for / DEFAULT_STEPS),
so a bare run measures what users get:

    .venv/bin/python benchmarks/tune_hashing.py --bits 16 32 64
    .venv/bin/python benchmarks/tune_hashing.py --bits 32 --epochs 10 --consistency 0 --hidden 512 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hashae import neighbours, recipes
from hashae.trainer import train_config_for
from hashae.codes import pack_bits
from hashae.datasets import load_idx_dataset
from hashae.metrics import evaluate_binary, exact_neighbours
from hashae.variants import HashingConfig, make_config

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path("/tmp/hashae_tune_cache")


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train = load_idx_dataset(DATA_DIR / "train-images-idx3-ubyte.gz", DATA_DIR / "train-labels-idx1-ubyte.gz")
    test = load_idx_dataset(DATA_DIR / "t10k-images-idx3-ubyte.gz", DATA_DIR / "t10k-labels-idx1-ubyte.gz")
    queries = np.random.default_rng(0).choice(10000, 1000, replace=False)
    return train.x, train.labels, test.x[queries], test.labels[queries]


def truth_for(query_x: np.ndarray, db_x: np.ndarray):
    """Exact pixel-space top 10 of the queries (cached on disk: it is the same for every run)."""
    query_x, db_x = query_x.reshape(len(query_x), -1), db_x.reshape(len(db_x), -1)
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "truth.npz"
    if path.exists():
        from hashae.metrics import NeighbourTruth

        saved = np.load(path)
        return NeighbourTruth(query_x=query_x, db_x=db_x, ids=saved["ids"], distances=saved["distances"])
    truth = exact_neighbours(query_x, db_x)
    np.savez(path, ids=truth.ids, distances=truth.distances)
    return truth


def pairs_for(config, x: np.ndarray, k: int, dims: int, seed: int) -> tuple[np.ndarray, float]:
    """Neighbour table of x in the config's view (recipes.neighbour_view, as the product finds
    them) and the seconds it took (timed on the first computation, cached after)."""
    CACHE.mkdir(exist_ok=True)
    view = f"_c{int(config.centre_images)}s{int(config.standardise_images)}"
    path = CACHE / f"pairs_n{len(x)}_k{k}_d{dims}_s{seed}{view}.npz"  # --train-limit runs have their own
    if path.exists():
        saved = np.load(path)
        return saved["pairs"], float(saved["seconds"])
    started = time.perf_counter()
    pairs = neighbours.nearest(recipes.neighbour_view(config, x), k=k, dims=dims, seed=seed)
    seconds = time.perf_counter() - started
    np.savez(path, pairs=pairs, seconds=seconds)
    return pairs, seconds


def codes_of(model, x: np.ndarray) -> np.ndarray:
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        bits = torch.cat([model.bits(chunk) for chunk in inputs.split(4096)])
    return pack_bits(bits.numpy())


def main() -> None:
    train_defaults = train_config_for("hashing")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", type=int, nargs="+", default=[32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: recipes.default_epochs (DEFAULT_STEPS)")
    p.add_argument("--batch-size", type=int, default=train_defaults.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"default: the recipe's ({HashingConfig.TRAINING['lr']:g}, HashingConfig.TRAINING)")
    p.add_argument("--schedule", default=train_defaults.schedule)
    p.add_argument("--hidden", type=int, nargs="*", default=None, help="default: the recipe's")
    p.add_argument("--noise-max", type=float, default=None)
    p.add_argument("--noise-ramp", type=float, default=None)
    p.add_argument("--balance", type=float, default=None)
    p.add_argument("--decorrelation", type=float, default=None)
    p.add_argument("--mask", type=float, default=None, help="masking corruption strength")
    p.add_argument("--consistency", type=float, default=None)
    p.add_argument("--consistency-kind", default=None, choices=["pull", "infonce"])
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--sharpen", type=float, default=None)
    p.add_argument("--pair-shift", type=int, default=None)
    p.add_argument("--hard-phase", type=float, default=None)
    p.add_argument("--code-norm", type=int, choices=[0, 1], default=None)
    p.add_argument("--code-gain", type=int, choices=[0, 1], default=None)
    p.add_argument("--sparsity", type=float, default=None)
    p.add_argument("--gain-speed", type=float, default=None)
    p.add_argument("--no-corruption", action="store_true", help="no input corruption (the seed's plain recipe)")
    p.add_argument("--standardise", type=int, choices=[0, 1], default=None, help="standardise_images (default: by shape, on for images)")
    p.add_argument("--centre", type=int, choices=[0, 1], default=None, help="centre_images (default off for hashing)")
    p.add_argument("--k", type=int, default=recipes.NEIGHBOURS_K, help="neighbours per item")
    p.add_argument("--pca-dims", type=int, default=recipes.NEIGHBOURS_DIMS)
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images only (quick looks)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--json", type=Path, default=None, help="append each row as JSON to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    db_x, db_labels, query_x, query_labels = load()
    truth = truth_for(query_x, db_x)
    train_x = db_x if args.train_limit is None else db_x[: args.train_limit]
    overrides = {
        name: value
        for name, value in {
            "hidden": tuple(args.hidden) if args.hidden is not None else None,
            "noise_max": args.noise_max,
            "noise_ramp": args.noise_ramp,
            "balance": args.balance,
            "decorrelation": args.decorrelation,
            "consistency": args.consistency,
            "consistency_kind": args.consistency_kind,
            "temperature": args.temperature,
            "sharpen": args.sharpen,
            "pair_shift": args.pair_shift,
            "hard_phase": args.hard_phase,
            "code_norm": bool(args.code_norm) if args.code_norm is not None else None,
            "code_gain": bool(args.code_gain) if args.code_gain is not None else None,
            "sparsity": args.sparsity,
            "gain_speed": args.gain_speed,
            "standardise_images": bool(args.standardise) if args.standardise is not None else None,
            "centre_images": bool(args.centre) if args.centre is not None else None,
            "corruption": {"kind": "none", "strength": 0.0} if args.no_corruption else (
                {"kind": "mask", "strength": args.mask} if args.mask is not None else None),
        }.items()
        if value is not None
    }
    print(
        "| label | bits | config | epochs | batch | lr | train s | cpu s | cpu s/epoch | mAP@1000 | P@r<=2 | empty | R@10 | R10@100 | saturated | flips | balance std | entropy |",
        flush=True,
    )
    for bits in args.bits:
        config = make_config("hashing", input_shape=train_x.shape[1:], code_size=bits, **overrides)
        train_config = recipes.with_epochs(
            train_config_for("hashing", batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, seed=args.seed),
            args.epochs,
            len(train_x),
        )
        torch.manual_seed(args.seed)
        pairs, pair_seconds = None, 0.0
        if config.consistency > 0:
            pairs, pair_seconds = pairs_for(config, train_x, args.k, args.pca_dims, args.seed)
        cpu_started = time.process_time()
        result = recipes.fit(config, train_x, train_config, pairs=pairs)
        cpu_seconds = time.process_time() - cpu_started + pair_seconds
        train_seconds = result.history.seconds + pair_seconds
        epochs = len(result.history.epochs)
        m = evaluate_binary(codes_of(result.model, query_x), codes_of(result.model, db_x), query_labels, db_labels, truth=truth)
        short = {
            "h": "-".join(map(str, config.hidden)),
            "noise": f"{config.noise_max}/{config.noise_ramp}",
            "bal": config.balance,
            "dec": config.decorrelation,
            "mask": config.corruption.strength,
            "cons": f"{config.consistency_kind}:{config.consistency}" if config.consistency else 0,
            "T": config.temperature if config.consistency_kind == "infonce" and config.consistency else None,
            "sharpen": config.sharpen if config.consistency and config.sharpen != 1 else None,
            "shift": config.pair_shift if config.consistency and config.pair_shift else None,
            "k": args.k if config.consistency else None,
            "hard": config.hard_phase or None,
            "norm": 1 if config.code_norm else None,
            "gain": config.gain_speed if config.code_gain else None,
            "sparse": config.sparsity or None,
            "std": 1 if config.standardise_images else None,
            "centre": 1 if config.centre_images else None,
        }
        desc = " ".join(f"{k}={v}" for k, v in short.items() if v is not None)
        print(
            f"| {args.label} | {bits} | {desc} | {epochs} | {train_config.batch_size} | {train_config.lr:g} | "
            f"{train_seconds:.0f} | {cpu_seconds:.0f} | {(cpu_seconds - pair_seconds) / epochs:.2f} | {m['map_at_1000']:.4f} | {m['p_at_r2']:.4f} | "
            f"{m['empty_ball_share']:.3f} | {m['recall_at_10']:.3f} | {m['r10_at_100']:.3f} | "
            f"{result.stats.saturated_share:.3f} | {result.noise_flip_share:.4f} | {result.stats.bit_balance_std:.3f} | {result.stats.mean_bit_entropy:.3f} |",
            flush=True,
        )
        if args.json:
            row = {"label": args.label, "bits": bits, "config": config.to_dict(), "train": vars(train_config) if hasattr(train_config, "__dict__") else None,
                   "train_seconds": train_seconds, "cpu_seconds": cpu_seconds, "pair_seconds": pair_seconds, "epochs": epochs, "metrics": m,
                   "code_stats": result.stats.as_dict() if result.stats else None, "noise_flip_share": result.noise_flip_share}
            with open(args.json, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
