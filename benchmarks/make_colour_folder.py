"""A second labelled image folder for `hashae bench DIR`: Fashion-MNIST items as 32x32 colour PNGs.

Each image is upscaled to 32x32 and tinted with a random colour (seeded, independent of the label),
on a random dark background colour, so the defaults are checked on colour input of another size.

    python benchmarks/make_colour_folder.py OUT --limit 20000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hashae.datasets import FASHION_MNIST_FOLDERS, load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=20000)
    args = parser.parse_args()
    data = load_fashion_mnist("train")
    rng = np.random.default_rng(0)
    for i in range(min(args.limit, len(data))):
        gray = np.asarray(Image.fromarray((data.x[i, 0] * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR), np.float32) / 255
        ink, paper = rng.uniform(0.4, 1.0, 3), rng.uniform(0.0, 0.3, 3)
        rgb = gray[..., None] * ink + (1 - gray[..., None]) * paper  # (32, 32, 3)
        folder = args.out / FASHION_MNIST_FOLDERS[int(data.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), "RGB").save(folder / f"colour_{i:05d}.png")
    print(f"wrote {min(args.limit, len(data))} colour images to {args.out}")


if __name__ == "__main__":
    main()
