"""The product's VAE retrained at several seeds, with or without config changes, scored on the
near-duplicate bench's latent mode: is a change to the copies' recall bigger than retraining noise?

For each seed, the VAE is trained on the 60,000 Fashion-MNIST train images as `hashae index`
trains it (index.bench.encoders.train_encoder: recipes.fit_default, the product's epochs), with the
--set fields on top of the product's config, then the bench (index/bench_duplicates.py) runs its
latent mode on the 1,000 originals x 16 transforms with that VAE (the store's hashing model is not
used by the latent mode). One JSON line per seed goes to --jsonl:

    python benchmarks/vae_over_seeds.py --store S --seeds 0,1,2 --jsonl F                 # the default
    python benchmarks/vae_over_seeds.py --store S --seeds 0,1,2 --set beta=0.1 --jsonl F

S: a store of the 60,000 train PNGs (`python benchmarks/bench_index.py --only first-run`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hashae import recipes
from hashae.datasets import load_fashion_mnist
from hashae.index.bench.encoders import train_encoder
from hashae.index.bench_duplicates import DuplicatesBenchOptions, run_duplicates_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="a VAEConfig field, e.g. beta=0.1")
    parser.add_argument("--jsonl", type=Path, required=True, help="append one line per seed here")
    args = parser.parse_args()
    fields = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}
    recipes.RECIPES["vae-trial"] = ("vae", fields)  # fit_default takes a recipe name: the VAE kind with these fields
    x = load_fashion_mnist("train").x
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            trained = train_encoder("vae-trial", x, code_size=32, folder=Path(folder), epochs=None, quality="fast", seed=seed)
            train_s = time.perf_counter() - started
            result = run_duplicates_bench(DuplicatesBenchOptions(store=args.store, latent_model=trained.folder, methods=("latent",)))
        row = {"fields": fields, "seed": seed, "train_s": round(train_s, 1), "recall_at_threshold": result.methods["latent"]["recall_at_threshold"],
               **{r["transform"]: r["recall_at_1"] for r in result.rows}}
        with open(args.jsonl, "a") as out:
            out.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
