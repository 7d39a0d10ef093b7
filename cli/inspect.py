"""`hashae inspect --model DIR --out recon.png`: what a trained model does to a few inputs, as a picture.

One row per input: the input, its corrupted version and the reconstruction of that (for models
trained with a corruption), the reconstruction of the clean input, and for hashing models the code
bits (black = 1) -- those of the corrupted input with the bits the corruption flipped in red.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import fail, handle_errors

FLIPPED = (0.84, 0.15, 0.16)  # red: a bit the corruption changed
FASHION_MNIST_SHAPE = (1, 28, 28)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


@handle_errors
def inspect(
    model_dir: Path = typer.Option(..., "--model", "-m", help="Checkpoint folder (e.g. .hashae/models/hashing-...)."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    data: str = typer.Option(None, "--data", help="Where the inputs come from: an image folder, fashion-mnist[:train|:test], an IDX file (default: the folder of the model's store, or the data `hashae train` trained it on).", show_default=False),
    count: int = typer.Option(16, "-n", "--count", help="Inputs to show (spread evenly over the data).", min=1, max=256),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruption noise."),
) -> None:
    """Draw inputs, their corrupted versions, reconstructions and code bits side by side."""
    import numpy as np
    import torch

    from hashae import checkpoint
    from hashae.datasets import load_source

    if not out.parent.is_dir():
        raise fail(f"{out.parent}: no such folder for --out", 2)
    model = checkpoint.load(model_dir)
    shape = tuple(model.config.input_shape)
    if len(shape) != 3:
        raise fail(f"{model_dir}: this model was trained on vectors, not images: nothing to draw", 2)
    data = data or default_data(model_dir, shape)
    dataset = load_source(data, size=shape[-1], channels=shape[0])
    if tuple(dataset.input_shape) != shape:
        raise fail(f"--data {data}: the data are {tuple(dataset.input_shape)}, the model takes {shape}", 2)
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(np.int64))
    x = torch.from_numpy(np.ascontiguousarray(dataset.x[picks]))
    torch.manual_seed(seed)
    views = reconstruct(model, x)
    picture = draw(views, binary=model.binary_codes, kind=model.config.kind, corruption=model.config.corruption)
    picture.save(out)
    noisy = "" if views.get("corrupted") is None else ", corrupted versions"
    bits = ", code bits" if model.binary_codes else ""
    typer.echo(f"wrote {len(picks)} inputs{noisy}, reconstructions{bits} of the {model.config.kind} model to {out}")


def default_data(model_dir: Path, shape: tuple[int, ...]) -> str:
    """The inputs a model is meant for: its store's indexed folder, else the data `hashae train`
    recorded, else Fashion-MNIST's test split for a 28x28 grey model; refused for any other."""
    from hashae.inference import read_config

    folder = store_folder(model_dir)
    if folder is not None:
        return folder
    source = read_config(model_dir).get("info", {}).get("source")
    if isinstance(source, dict) and isinstance(source.get("data"), str):
        return source["data"]
    if shape == FASHION_MNIST_SHAPE:
        return "fashion-mnist:test"
    raise fail(f"{model_dir}: this model takes {shape} inputs and does not say what it was trained on; give --data FOLDER", 2)


def store_folder(model_dir: Path) -> str | None:
    """The indexed folder of the store a model belongs to (its checkpoint sits in <store>/models/)."""
    from hashae.errors import HashaeError
    from hashae.index.backends import open_store

    model_dir = Path(model_dir).resolve()
    if model_dir.parent.name != "models":
        return None
    try:
        store = open_store(model_dir.parent.parent)
    except HashaeError:
        return None
    try:
        settings = store.settings() if Path(store.models_dir).resolve() == model_dir.parent else None
    finally:
        store.close()
    return settings.source_root if settings is not None else None


def reconstruct(model, x) -> dict:
    """Inputs, corrupted inputs (or None), reconstructions of both, and boolean codes of both."""
    import torch

    from hashae.variants import ACTIVATIONS

    model.eval()
    corruption = model.config.corruption
    with torch.no_grad():
        clean = model.normalise(x)
        noisy = None if corruption.kind == "none" or corruption.strength == 0 else corruption.apply(clean)

        def recon(x_norm):
            return model.decode(model.latent(model.encode_pre(x_norm), 1.0)).clamp(0, 1)

        def bits(x_norm):  # Autoencoder.bits, from already normalised (maybe corrupted) inputs
            activation = ACTIVATIONS[model.bits_activation or model.code_activation]
            return activation(model.encode_pre(x_norm)[:, : model.config.code_size]) > model.bit_threshold

        views = {"input": x, "reconstruction": recon(clean), "bits": model.bits(x)}
        if noisy is not None:
            views["corrupted"] = (noisy * model.input_scale + model.input_mean).clamp(0, 1)
            views["noisy_reconstruction"] = recon(noisy)
            views["noisy_bits"] = bits(noisy)
    return {k: v.numpy() for k, v in views.items()}


def draw(views: dict, *, binary: bool, kind: str, corruption) -> "Image.Image":  # noqa: F821
    """Columns of tiles, one row per input, with a title over each column."""
    from hashae.images import captioned_grid, side_by_side

    images = views["input"]
    side = images.shape[-1]
    scale = max(1, 96 // side)
    columns = [("input", images)]
    if "corrupted" in views:
        columns.append((f"{corruption.kind} {corruption.strength:g}", views["corrupted"]))
    columns.append(("reconstruction", views["reconstruction"]))
    if "corrupted" in views:
        columns.append(("from corrupted", views["noisy_reconstruction"]))
    panels = [captioned_grid(list(tiles), cols=1, scale=scale, title=title) for title, tiles in columns]
    if binary:
        height = side * scale
        panels.append(captioned_grid(_bit_rows(views["bits"], None, height), cols=1, scale=1, title=f"{kind} code bits"))
        if "noisy_bits" in views:
            flips = views["noisy_bits"] != views["bits"]
            title = f"corrupted: {flips.sum(1).mean():.1f} bits flipped (red)"
            panels.append(captioned_grid(_bit_rows(views["noisy_bits"], flips, height), cols=1, scale=1, title=title))
    return side_by_side(panels)


def _bit_rows(bits, flipped, height: int) -> list:
    """One RGB tile per code, as tall as the image tiles: the bits strip, flipped bits in red."""
    import numpy as np

    from hashae.images import bits_strip

    nbits = bits.shape[1]
    cell = max(3, min(10, 384 // nbits))
    tiles = []
    for i, row in enumerate(bits):
        strip = np.repeat(bits_strip(row, cell=cell), 3, axis=0)  # (3, cell, nbits * cell)
        if flipped is not None:
            mask = np.kron(flipped[i][None, :], np.ones((cell, cell)))[None].astype(bool)
            colour = np.array(FLIPPED, dtype=np.float32)[:, None, None]
            darkness = 1.0 - strip  # 1 for a set bit
            strip = np.where(np.repeat(mask, 3, axis=0), colour * (0.75 + 0.25 * (1 - darkness)), strip)
        strip = np.pad(strip, ((0, 0), (1, 1), (1, 1)), constant_values=0.6)  # a thin grey frame
        top = max(0, (height - strip.shape[1]) // 2)
        tile = np.ones((3, max(height, strip.shape[1]), strip.shape[2]), dtype=np.float32)
        tile[:, top : top + strip.shape[1]] = strip
        tiles.append(tile)
    return tiles
