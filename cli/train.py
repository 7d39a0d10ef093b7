"""`hashae train DATA --variant KIND --out DIR`: train any autoencoder of the seed on any source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hashae.cli.common import JsonOption, QuietOption, fail, handle_errors, print_json


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as JSON when they can be (numbers, lists), else kept as text.
    `corruption=mask:0.3` is shorthand for {"kind": "mask", "strength": 0.3}."""
    fields: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise fail(f"--set expects key=value, got {item!r}", 2)
        fields[key.strip().replace("-", "_")] = parse_value(key.strip(), raw.strip())
    return fields


def parse_value(key: str, raw: str) -> Any:
    if key == "corruption" and ":" in raw:
        kind, _, strength = raw.partition(":")
        return {"kind": kind, "strength": float(strength)}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(value, list) else value


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
    lr: float = typer.Option(None, "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(None, "--batch-size", min=1),
    arch: str = typer.Option(None, "--arch", help="mlp or conv."),
    settings: list[str] = typer.Option([], "--set", help="Any config field, e.g. --set sparsity=0.5 --set corruption=mask:0.3."),
    image_size: int = typer.Option(28, "--image-size", help="Images are resized to this square size.", min=4),
    channels: int = typer.Option(None, "--channels", help="1 or 3 (default: detected from the images)."),
    limit: int = typer.Option(None, "--limit", help="Train on the first N items only.", min=2),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one autoencoder and save it as a checkpoint folder (config.json + weights.safetensors)."""
    from hashae import checkpoint
    from hashae.data import load_source
    from hashae.recipes import default_config, default_train_config, fit, with_epochs

    if bits and latent:
        raise fail("give --bits or --latent, not both", 2)
    dataset = load_source(data, size=image_size, channels=channels)
    if limit:
        dataset = dataset.subset(slice(0, limit))
    overrides = parse_settings(settings)
    if arch:
        overrides["arch"] = arch
    config = default_config(variant, input_shape=dataset.input_shape, code_size=bits or latent or 32, **overrides)
    train_config = default_train_config(variant, seed=seed, device=device, lr=lr, batch_size=batch_size)
    train_config = with_epochs(train_config, epochs, len(dataset.x))
    result = fit(config, dataset.x, train_config, show_progress=not quiet)
    summary = {**result.summary(), "items": len(dataset.x), "out": str(out)}
    checkpoint.save(result.model, out, info={"history": result.history.epochs, **summary})
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
