"""Prototype for issue 13 (not the product's training): does the hashing model find altered copies
when its neighbour pairs are augmented like the copies are altered?

The product's hashing model (hashae.recipes.fit_default) pulls each item's code towards a
label-free neighbour's (InfoNCE against the batch), the neighbour shifted by up to 1 px. Here the
pair view is replaced, in this process only, by strong augmentations of the bench's kinds (affine:
rotation +-15 degrees, scale +-10% (a crop or a pad), shift +-2 px; photometric: brightness and
contrast +-30%, blur, half-resolution, noise), and optionally the pair is the item itself (a
SimCLR-style positive) for a share of the draws. Each variant is trained on the 60,000
Fashion-MNIST train images at 32 bits like the store trains (same config, training settings and
epochs), then measured on
  - class retrieval: mAP@1000 and precision within radius 2 of the BENCHMARK protocol
    (1,000 rng(0) test queries), the quality issue's goals;
  - the near-duplicate bench (index/bench_duplicates.py), with the store's VAE for the latent parts.

    python benchmarks/prototype_duplicate_training.py --store S --variants augmented,self50 \\
        --markdown benchmarks/results/duplicates-training.md --json benchmarks/results/duplicates-training.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hashae import checkpoint, metrics
from hashae.datasets import load_fashion_mnist
from hashae.inference import InferenceEncoder
from hashae.index.bench_duplicates import DuplicatesBenchOptions, run_duplicates_bench
from hashae.neighbours import nearest
from hashae.recipes import NEIGHBOURS_DIMS, NEIGHBOURS_K, fit, with_epochs
from hashae.trainer import train_config_for
from hashae.variants import make_config
from hashae.variants.hashing import HashingAutoencoder

# variant -> share of pair draws that are the item itself (the rest: its neighbours); None: the
# product's training unchanged (pair view: the 1-px shift)
VARIANTS = {"product": None, "augmented": 0.0, "self50": 0.5, "self100": 1.0}
REPORTED = ("jpeg q30", "resize x0.5", "brightness -30%", "contrast -30%", "blur r1", "noise 0.05", "shift 2px", "crop 10%", "pad 10%", "rotate 5", "rotate 15", "hflip")


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random copies of images x (B, C, H, W) in [0, 1]: an affine warp (rotation, scale, shift),
    then photometric changes, each drawn per image."""
    b, _, h, w = x.shape
    angle = (torch.rand(b) * 2 - 1) * math.radians(15)
    scale = 1 + (torch.rand(b) * 2 - 1) * 0.1
    shift = torch.randint(-2, 3, (b, 2)).float() * torch.tensor([2 / w, 2 / h])  # pixels in grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    x = x * _per_image(b, 0.7, 1.3, p=0.5, like=x)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * _per_image(b, 0.7, 1.3, p=0.5, like=x)  # contrast
    half = torch.rand(b, device=x.device) < 0.2
    if half.any():
        small = F.interpolate(x[half], scale_factor=0.5, mode="bilinear", align_corners=False)
        x[half] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    blurred = torch.rand(b, device=x.device) < 0.2
    if blurred.any():
        x[blurred] = _gaussian_blur(x[blurred], sigma=0.8)
    x = x + torch.randn_like(x) * _per_image(b, 0.0, 0.05, p=0.5, like=x, neutral=0.0)
    return x.clamp(0, 1)


def _per_image(b: int, low: float, high: float, *, p: float, like: torch.Tensor, neutral: float = 1.0) -> torch.Tensor:
    """A factor per image (B, 1, 1, 1): uniform in [low, high] with probability p, else neutral."""
    values = low + (high - low) * torch.rand(b)
    values = torch.where(torch.rand(b) < p, values, torch.full((b,), neutral))
    return values.to(like)[:, None, None, None]


def _gaussian_blur(x: torch.Tensor, *, sigma: float) -> torch.Tensor:
    taps = torch.exp(-torch.arange(-1, 2, dtype=x.dtype) ** 2 / (2 * sigma**2))
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2  # (3, 3)
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3).contiguous(), groups=c)


def train_variant(name: str, x: np.ndarray, *, epochs: int | None, folder: Path) -> tuple[Path, float]:
    """Train the store's hashing model on x with this variant's pairs and pair view; save it."""
    self_share = VARIANTS[name]
    config = make_config("hashing", input_shape=tuple(x.shape[1:]), code_size=32)
    train_config = with_epochs(train_config_for("hashing", seed=0, device="cpu"), epochs, len(x))
    pairs = None
    original_view = HashingAutoencoder.pair_view
    if self_share is not None:
        neighbours = nearest(x, k=NEIGHBOURS_K, dims=NEIGHBOURS_DIMS, seed=0)  # (n, k)
        n_self = round(NEIGHBOURS_K * self_share / (1 - self_share)) if self_share < 1 else NEIGHBOURS_K
        own = np.repeat(np.arange(len(x))[:, None], n_self, axis=1)
        pairs = own if self_share == 1 else np.concatenate([neighbours, own], axis=1)
        HashingAutoencoder.pair_view = lambda self, paired: augment(paired)
    try:
        started = time.perf_counter()
        fitted = fit(config, x, train_config, name=f"hashing ({name})", pairs=pairs)
        seconds = time.perf_counter() - started
    finally:
        HashingAutoencoder.pair_view = original_view
    return checkpoint.save(fitted.model, folder / f"hashing-{name}"), seconds


def class_retrieval(model_dir: Path, db_x: np.ndarray, db_labels: np.ndarray) -> dict[str, float]:
    test = load_fashion_mnist("test")
    pick = np.random.default_rng(0).choice(len(test), 1000, replace=False)
    encoder = InferenceEncoder.load(model_dir)
    db_codes = np.concatenate([encoder.codes(db_x[i : i + 4096]) for i in range(0, len(db_x), 4096)])
    row = metrics.evaluate_binary(encoder.codes(test.x[pick]), db_codes, test.labels[pick], db_labels)
    return {k: row[k] for k in ("map_at_1000", "p_at_r2", "empty_ball_share")}


def normalisation_check(originals: int = 1000) -> dict[str, dict[str, float]]:
    """Raw pixels' recall@1 (L2, ties against) on the photometric copies, as decoded and after a
    per-image standardisation ((x - mean) / std of each image): what an encoder whose input is
    standardised per image would no longer have to learn."""
    from hashae.decode import decode_image
    from hashae.index.bench_duplicates import Scorer, _chunks, load_data, squared_l2_matrix
    from hashae.index.copies import PHOTOMETRIC

    data = load_data(DuplicatesBenchOptions(originals=originals, transforms=PHOTOMETRIC))
    db = data.x.reshape(len(data.x), -1)
    queries = np.stack([decode_image(f, size=28, channels=1).reshape(-1) for f in data.copy_files()])
    standardise = lambda v: (v - v.mean(1, keepdims=True)) / np.maximum(v.std(1, keepdims=True), 1e-6)  # noqa: E731
    out = {}
    for name, view in (("raw", lambda v: v), ("standardised per image", standardise)):
        d, q = view(db), view(queries)
        norms, scorer = (d * d).sum(1), Scorer(data.n_queries)
        for rows in _chunks(data.n_queries):
            scorer.add(rows, squared_l2_matrix(q[rows], d, norms), data.correct[rows])
        out[name] = {t: scorer.recall_at(1, data.queries_of(t)) for t in PHOTOMETRIC}
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="A store of the 60,000 Fashion-MNIST train images (its VAE and its product hashing model).")
    parser.add_argument("--variants", default="augmented,self50", help=f"Comma-separated: {', '.join(VARIANTS)} (product: the store's own model).")
    parser.add_argument("--epochs", type=int, help="Training epochs (default: the product's for 60,000 items).")
    parser.add_argument("--originals", type=int, default=1000)
    parser.add_argument("--models", type=Path, help="Keep the trained checkpoints here (default: a temporary folder).")
    parser.add_argument("--normalisation-check", action="store_true", help="Only measure raw pixels' recall@1 on the photometric copies, as decoded and standardised per image.")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.normalisation_check:
        normalisation_check(args.originals)
        return
    train = load_fashion_mnist("train")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.models or Path(scratch)
        for name in (v.strip() for v in args.variants.split(",")):
            if name == "product":
                from hashae.index.bench_duplicates import _store_model_dirs

                model_dir, seconds = _store_model_dirs(args.store)["hashing"], None
            else:
                model_dir, seconds = train_variant(name, train.x, epochs=args.epochs, folder=folder)
            bench = run_duplicates_bench(DuplicatesBenchOptions(
                originals=args.originals, store=args.store, hashing_model=model_dir, methods=("codes", "hamming", "hybrid"),
            ))
            results[name] = {"train_s": seconds, "class_retrieval": class_retrieval(model_dir, train.x, train.labels),
                             "duplicates": bench.as_dict()}
            print(name, json.dumps(results[name]["class_retrieval"]), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


def markdown(results: dict) -> str:
    lines = ["| variant | mode | mAP@1000 | P@r<=2 | " + " | ".join(REPORTED) + " |", "|---" * (4 + len(REPORTED)) + "|"]
    for name, result in results.items():
        quality = result["class_retrieval"]
        cells = {(r["method"], r["transform"]): r["recall_at_1"] for r in result["duplicates"]["rows"]}
        for mode in ("codes", "hamming", "hybrid"):
            head = f"| {name} | {mode} | {quality['map_at_1000']:.3f} | {quality['p_at_r2']:.3f} | " if mode == "codes" else f"| | {mode} | | | "
            lines.append(head + " | ".join(f"{cells[mode, t]:.3f}" for t in REPORTED) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
