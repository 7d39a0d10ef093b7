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

With --vae-variants the other half of issue 13 (the rows of benchmarks/results/duplicates-training.md
"The VAE"): VAE variants (per-image standardisation, trained on altered views, an invariance term,
conv, 64-d) trained like the store's VAE, each measured on class retrieval (latent and hybrid
mAP@1000, the store's hashing model for the codes) and on the near-duplicate bench's latent and
hybrid modes (--quick: 10,000 database images, 300 originals, 9 transforms):

    python benchmarks/prototype_duplicate_training.py --store S --vae-variants vae-std,vae-std-aug --quick --models M --json F.jsonl

    python benchmarks/prototype_duplicate_training.py --store S --variants augmented,self50 \\
        --markdown benchmarks/results/duplicates-training.md --json benchmarks/results/duplicates-training.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hashae import checkpoint, metrics
from hashae.datasets import load_fashion_mnist
from hashae.inference import InferenceEncoder
from hashae.index.bench_duplicates import DuplicatesBenchOptions, run_duplicates_bench
from hashae.neighbours import nearest
from hashae.recipes import NEIGHBOURS_DIMS, NEIGHBOURS_K, fit, with_epochs
from hashae.trainer import train_config_for
from hashae.variants import make_config
from hashae.variants.config import Augmentation
from hashae.variants.hashing import HashingAutoencoder

# variant -> share of pair draws that are the item itself (the rest: its neighbours); None: the
# product's training unchanged (pair view: the 1-px shift)
VARIANTS = {"product": None, "augmented": 0.0, "self50": 0.5, "self100": 1.0}
# the pair view of the augmented variants (the bench's kinds of change; hashae.augment does them)
PAIR_AUGMENTATION = Augmentation(shift=2, rotate=15, scale=0.1, brightness=0.3, contrast=0.3, half_resolution=0.2, blur=0.2, noise=0.05)
REPORTED = ("jpeg q30", "resize x0.5", "brightness -30%", "contrast -30%", "blur r1", "noise 0.05", "shift 2px", "crop 10%", "pad 10%", "rotate 5", "rotate 15", "hflip")


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
        HashingAutoencoder.pair_view = lambda self, paired: PAIR_AUGMENTATION.apply(paired)
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
    from hashae.inference import standardise_images
    from hashae.index.bench_duplicates import Scorer, _chunks, load_data, squared_l2_matrix
    from hashae.index.copies import PHOTOMETRIC

    data = load_data(DuplicatesBenchOptions(originals=originals, transforms=PHOTOMETRIC))
    db = data.x.reshape(len(data.x), -1)
    queries = np.stack([decode_image(f, size=28, channels=1).reshape(-1) for f in data.copy_files()])
    out = {}
    for name, view in (("raw", lambda v: v), ("standardised per image", standardise_images)):
        d, q = view(db), view(queries)
        norms, scorer = (d * d).sum(1), Scorer(data.n_queries)
        for rows in _chunks(data.n_queries):
            scorer.add(rows, squared_l2_matrix(q[rows], d, norms), data.correct[rows])
        out[name] = {t: scorer.recall_at(1, data.queries_of(t)) for t in PHOTOMETRIC}
        print(name, json.dumps(out[name]), flush=True)
    return out


# ---------------------------------------------------------------------------------- the VAE (R2)
# VAE variants for issue 13: the latent that orders equal and nearby codes, trained for copies.
# name -> VAEConfig fields over the product's (code_size: the latent size). The augmentations:
COPIES = {"shift": 2, "rotate": 10, "scale": 0.1, "brightness": 0.3, "contrast": 0.3, "half_resolution": 0.2, "blur": 0.2, "noise": 0.05}
STRONG = {**COPIES, "shift": 3, "scale": 0.15, "blur": 0.3, "half_resolution": 0.3}
# The rows of duplicates-training.md ran the code of their time: centre and centre2 the earlier
# centring (raw-intensity centroid before 0f67b96; zeros shifted in until 876abbe), the rows before
# `soft` a blur of sigma 0.8 (now 1.0), so re-running those names now measures today's code.
VAE_VARIANTS = {
    "vae-old": {"centre_images": False, "standardise_images": False, "augmentation": {}},  # the VAE before issue 13
    "vae-std": {"centre_images": False, "standardise_images": True, "augmentation": {}},
    "vae-std-aug": {"centre_images": False, "standardise_images": True, "augmentation": COPIES},
    "vae-std-aug-inv1": {"centre_images": False, "standardise_images": True, "augmentation": COPIES, "invariance": 1.0},
    "vae-std-aug-strong": {"centre_images": False, "standardise_images": True, "augmentation": STRONG},
    "vae-std-aug-conv": {"centre_images": False, "standardise_images": True, "augmentation": COPIES, "arch": "conv", "hidden": (32, 64)},
    "vae-std-aug-64": {"centre_images": False, "standardise_images": True, "augmentation": COPIES, "code_size": 64},
    "vae-centre-std-aug": {"centre_images": True, "standardise_images": True, "augmentation": COPIES},
    "vae-centre-std": {"centre_images": True, "standardise_images": True, "augmentation": {}},
    # centred on the intensity above each image's minimum (the runs above: on the raw intensity)
    "vae-centre2-std-aug": {"centre_images": True, "standardise_images": True, "augmentation": COPIES},
    "vae-centre2-std-aug-zoom": {"centre_images": True, "standardise_images": True, "augmentation": {**COPIES, "scale": 0.15}},
    # the blur above at sigma 1.0 (the runs above: 0.8), blur and half resolution more often
    "vae-centre2-std-aug-zoom-soft": {"centre_images": True, "standardise_images": True,
                                      "augmentation": {**COPIES, "scale": 0.15, "blur": 0.4, "half_resolution": 0.4}},
    # centred as above, the image's minimum (not 0) shifted in: a contrast copy's grey background
    # stays uniform (the runs above: zeros shifted in)
    "vae-centre3-std-aug-zoom-soft": {"centre_images": True, "standardise_images": True,
                                      "augmentation": {**COPIES, "scale": 0.15, "blur": 0.4, "half_resolution": 0.4}},
    "vae-default": {},  # the product's default VAE config, whatever it is now
}
QUICK_TRANSFORMS = ("jpeg q30", "resize x0.5", "brightness -30%", "contrast -30%", "blur r1", "noise 0.05", "shift 2px", "crop 10%", "rotate 5")


def train_vae_variant(name: str, x: np.ndarray, *, epochs: int | None, folder: Path) -> tuple[Path, float]:
    """Train a VAE variant on x with the product's training settings and epochs; save it."""
    fields = dict(VAE_VARIANTS[name])
    config = make_config("vae", input_shape=tuple(x.shape[1:]), **{"code_size": 32, **fields})
    train_config = with_epochs(train_config_for("vae", seed=0, device="cpu"), epochs, len(x))
    started = time.perf_counter()
    fitted = fit(config, x, train_config, name=f"VAE ({name})")
    return checkpoint.save(fitted.model, folder / name), time.perf_counter() - started


def latent_class_retrieval(vae_dir: Path, hashing_dir: Path, db_x: np.ndarray, db_labels: np.ndarray) -> dict[str, float]:
    """mAP@1000 of the BENCHMARK protocol (1,000 rng(0) test queries) in latent mode (L2 between VAE
    means) and in hybrid mode (index/search.py's answer with the given hashing model's codes)."""
    from hashae.index.array_view import ArrayView
    from hashae.index.search import search

    test = load_fashion_mnist("test")
    pick = np.random.default_rng(0).choice(len(test), 1000, replace=False)
    q_x, q_labels = test.x[pick], test.labels[pick]
    vae, hashing = InferenceEncoder.load(vae_dir), InferenceEncoder.load(hashing_dir)
    db_latents = np.concatenate([vae.embed(db_x[i : i + 4096]) for i in range(0, len(db_x), 4096)])
    db_codes = np.concatenate([hashing.codes(db_x[i : i + 4096]) for i in range(0, len(db_x), 4096)])
    q_latents, q_codes = vae.embed(q_x), hashing.codes(q_x)
    latent = metrics.evaluate_float(q_latents, db_latents, q_labels, db_labels)["map_at_1000"]
    view, precisions = ArrayView(db_codes, db_latents), []
    for start in range(0, len(q_x), 100):
        rows = slice(start, start + 100)
        answers = search(view, codes=q_codes[rows], latents=q_latents[rows], mode="hybrid", k=metrics.MAP_DEPTH)
        ids = np.array([[hit.id for hit in hits] for hits in answers])  # (100, 1000)
        precisions.append(metrics.average_precisions(db_labels[ids] == q_labels[rows, None], k=metrics.MAP_DEPTH))
    return {"latent_map_at_1000": round(float(latent), 4), "hybrid_map_at_1000": round(float(np.concatenate(precisions).mean()), 4)}


def run_vae_variants(args: argparse.Namespace) -> None:
    """Each VAE variant: train (or reuse --models/NAME), class retrieval, near-duplicate recall@1
    in latent and hybrid mode; one JSON line per variant appended to --json."""
    from hashae.index.bench_duplicates import _store_model_dirs

    train = load_fashion_mnist("train")
    hashing_dir = args.hashing_model or _store_model_dirs(args.store)["hashing"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.models or Path(scratch)
        for name in (v.strip() for v in args.vae_variants.split(",")):
            record: dict = {"variant": name, "fields": json.loads(json.dumps(VAE_VARIANTS[name])), "hashing_model": str(hashing_dir)}
            if (folder / name).is_dir():
                model_dir = folder / name
            else:
                model_dir, seconds = train_vae_variant(name, train.x, epochs=args.epochs, folder=folder)
                record["train_s"] = round(seconds, 1)
            record.update(latent_class_retrieval(model_dir, hashing_dir, train.x, train.labels))
            quick = {"db_limit": 10000, "originals": 300, "transforms": QUICK_TRANSFORMS} if args.quick else {"originals": args.originals}
            bench = run_duplicates_bench(DuplicatesBenchOptions(store=args.store, hashing_model=hashing_dir, latent_model=model_dir,
                                                                methods=("latent", "hybrid"), **quick))
            record["bench"] = "quick: 10,000 database images, 300 originals" if args.quick else f"full: 60,000 database images, {args.originals} originals"
            record["recall_at_1"] = {f"{r['method']} | {r['transform']}": round(r["recall_at_1"], 3) for r in bench.rows}
            print(json.dumps(record), flush=True)
            if args.json:
                with open(args.json, "a") as stream:
                    stream.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="A store of the 60,000 Fashion-MNIST train images (its VAE and its product hashing model).")
    parser.add_argument("--variants", default="augmented,self50", help=f"Comma-separated: {', '.join(VARIANTS)} (product: the store's own model).")
    parser.add_argument("--epochs", type=int, help="Training epochs (default: the product's for 60,000 items).")
    parser.add_argument("--originals", type=int, default=1000)
    parser.add_argument("--models", type=Path, help="Keep the trained checkpoints here (default: a temporary folder).")
    parser.add_argument("--normalisation-check", action="store_true", help="Only measure raw pixels' recall@1 on the photometric copies, as decoded and standardised per image.")
    parser.add_argument("--vae-variants", help=f"Instead of hashing variants, these VAE variants (comma-separated: {', '.join(VAE_VARIANTS)}).")
    parser.add_argument("--hashing-model", type=Path, help="With --vae-variants: the hashing checkpoint for hybrid mode (default: the store's).")
    parser.add_argument("--quick", action="store_true", help="With --vae-variants: the quick bench (10,000 database images, 300 originals, 9 transforms).")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.normalisation_check:
        normalisation_check(args.originals)
        return
    if args.vae_variants:
        run_vae_variants(args)
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
