"""`hashae train DATA --variant KIND --out DIR`: train any autoencoder of the seed on any source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hashae.cli.common import JsonOption, QuietOption, fail, handle_errors, print_json


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as JSON when they can be (numbers, lists, true/false), else
    kept as text. `corruption=mask:0.3` is shorthand for {"kind": "mask", "strength": 0.3}, and
    `corruption=none` for no corruption. The config checks each value when it is built."""
    fields: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set expects key=value, got {item!r}", 2)
        fields[key.strip().replace("-", "_")] = parse_value(key.strip(), raw.strip())
    return fields


def parse_value(key: str, raw: str) -> Any:
    """One --set value: JSON when it parses (lists become tuples), the corruption shorthand, else text."""
    if key == "corruption" and (raw == "none" or ":" in raw):
        kind, _, strength = raw.partition(":")
        try:
            return {"kind": kind, "strength": float(strength or 0)}
        except ValueError:
            raise fail(f"--set corruption={raw}: the strength after ':' must be a number, e.g. mask:0.3", 2) from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(value, list) else value


def model_fields(variant: str, *, bits: int | None, latent: int | None, arch: str | None, settings: list[str]) -> dict[str, Any]:
    """The config fields the flags ask for, each checked (name, type, range) before any data is read."""
    from hashae.variants import check_fields

    fields = parse_settings(settings)
    if "input_shape" in fields:
        raise fail("input_shape comes from the data (use --image-size and --channels for images)", 2)
    if bits and latent:
        raise fail("give --bits or --latent, not both", 2)
    if (bits or latent) and "code_size" in fields:
        raise fail("give the code size once: --bits/--latent or --set code_size, not both", 2)
    if bits or latent:
        fields["code_size"] = bits or latent
    if arch:
        fields["arch"] = arch
    check_fields(variant, fields)
    return fields


def source_info(data: str, *, image_size: int, channels: int | None) -> dict[str, Any]:
    """Where the training data came from, saved with the checkpoint (`hashae inspect` reads it)."""
    path = Path(data)
    return {"data": str(path.resolve()) if path.exists() else data, "image_size": image_size, "channels": channels}


def register(app: typer.Typer) -> None:
    app.command("train")(train)


@handle_errors
def train(
    data: str = typer.Argument(..., help="A folder of images, an IDX file, a .npy array of vectors, or fashion-mnist[:train|test]."),
    variant: str = typer.Option("hashing", "--variant", "-v", help="Model kind: linear, undercomplete, sparse, denoising, contractive, vae, hashing."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    bits: int = typer.Option(None, "--bits", help="Code length in bits (binary models).", min=8),
    latent: int = typer.Option(None, "--latent", help="Latent size (continuous models).", min=1),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (default: scaled to the data size).", min=1),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default: the kind's own)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Items per optimiser step (default 256).", min=1),
    arch: str = typer.Option(None, "--arch", help="mlp or conv."),
    settings: list[str] = typer.Option([], "--set", help="Any config field, e.g. --set sparsity=0.5 --set corruption=mask:0.3."),
    image_size: int = typer.Option(28, "--image-size", help="Images are resized to this square size.", min=4),
    channels: int = typer.Option(None, "--channels", help="1 or 3 (default: detected from the images)."),
    limit: int = typer.Option(None, "--limit", help="Train on the first N items only.", min=2),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, the split, the batch order and the noise."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    nproc: int = typer.Option(1, "--nproc", help="Training processes on this machine (torch DDP: gloo on CPU, nccl with one GPU each); the batch size stays the whole batch. Under torchrun leave it at 1.", min=1),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one autoencoder and save it as a checkpoint folder.

    The folder holds config.json and weights.safetensors; `hashae generate` and `hashae inspect` read it.
    With --nproc N (or under torchrun) N processes train it together and one writes it.
    """
    from hashae import checkpoint, distributed
    from hashae.cli.progress import reporter
    from hashae.datasets import load_source
    from hashae.recipes import fit, with_epochs
    from hashae.trainer import train_config_for
    from hashae.variants import make_config

    fields = model_fields(variant, bits=bits, latent=latent, arch=arch, settings=settings)
    train_config = train_config_for(variant, seed=seed, device=device, lr=lr, batch_size=batch_size)
    dataset = load_source(data, size=image_size, channels=channels)
    if limit:
        dataset = dataset.subset(slice(0, limit))
    config = make_config(variant, input_shape=dataset.input_shape, **fields)
    train_config = with_epochs(train_config, epochs, len(dataset.x))
    with reporter(quiet or not distributed.main_process()) as report:
        result = distributed.run(fit, args=(config, dataset.x, train_config), nproc=nproc, device=device, report=report)
    if not distributed.main_process():
        return  # a torchrun rank other than 0: rank 0 writes and prints
    summary = {**result.summary(), "items": len(dataset.x), "out": str(out)}
    source = source_info(data, image_size=image_size, channels=channels)
    checkpoint.save(result.model, out, info={"history": result.history.epochs, "source": source, **summary})
    if as_json:
        print_json(summary)
        return
    terms = ", ".join(f"{k} {v:.4g}" for k, v in summary["final"].items())
    typer.echo(f"trained {variant} on {len(dataset.x)} items, {summary['epochs']} epochs in {summary['seconds']:.1f}s: {terms}")
    if result.stats is not None:
        s = result.stats
        typer.echo(
            f"codes: {s.saturated_share:.1%} of units saturated, bit balance std {s.bit_balance_std:.3f}, "
            f"mean bit entropy {s.mean_bit_entropy:.3f}, {s.unique_codes} distinct codes"
        )
    typer.echo(f"saved to {out}")
