"""`hashae generate --model DIR -n 64 --out grid.png`: the seed's generative view of a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import fail, handle_errors

PRIORS = ("calibrated", "naive", "both")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


@handle_errors
def generate(
    model_dir: Path = typer.Option(..., "--model", "-m", help="Checkpoint folder."),
    count: int = typer.Option(64, "-n", "--count", help="Samples per panel.", min=1, max=1024),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    prior: str = typer.Option("both", "--prior", help="calibrated (codes drawn from those seen in training), naive (each unit drawn independently from the prior), or both side by side."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled codes."),
) -> None:
    """Decode sampled codes into a grid of images.

    A plain autoencoder has no prior: its naive panel draws each code unit from its own training
    values independently of the others, and the command says so.
    """
    from hashae import checkpoint
    from hashae.images import captioned_grid, side_by_side

    if prior not in PRIORS:
        raise fail(f"--prior {prior!r}: use {', '.join(PRIORS)}", 2)
    if not out.parent.is_dir():
        raise fail(f"{out.parent}: no such folder for --out", 2)
    model = checkpoint.load(model_dir)
    if len(model.config.input_shape) != 3:
        raise fail(f"{model_dir}: this model was trained on vectors, not images: nothing to draw", 2)
    chosen = ["calibrated", "naive"] if prior == "both" else [prior]
    panels = []
    for name in chosen:
        images = model.sample(count, calibrated=name == "calibrated", seed=seed).numpy()
        panels.append(captioned_grid(images, scale=2, title=panel_title(model, name)))
    side_by_side(panels).save(out)
    typer.echo(f"wrote {len(chosen) * count} samples to {out}")
    for name in chosen:
        typer.echo(f"  {name}: {what_is_drawn(model, name)}")


def panel_title(model, name: str) -> str:
    """A short title over a panel (the long story is in what_is_drawn)."""
    if name == "naive" and model.prior is None:
        return f"{model.config.kind}: naive, no prior"
    return f"{model.config.kind}: {name} codes"


def what_is_drawn(model, name: str) -> str:
    """One line saying what a panel shows."""
    if name == "calibrated":
        return "decoded codes of training items (the model's own codes, so these look like its data)"
    if model.prior is not None:
        return f"decoded codes drawn from the prior it was trained towards: {model.prior}"
    return (
        f"a {model.config.kind} autoencoder has no prior: each code unit is drawn from its own training "
        "values independently of the others, so expect noise rather than pictures of the data"
    )
