"""`hashae generate --model DIR -n 64 --out grid.png`: the seed's generative view of a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import handle_errors


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


@handle_errors
def generate(
    model_dir: Path = typer.Option(..., "--model", "-m", help="Checkpoint folder."),
    count: int = typer.Option(64, "-n", "--count", help="Samples per panel.", min=1, max=1024),
    out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
    prior: str = typer.Option("both", "--prior", help="calibrated (codes drawn from those seen in training), naive (each unit drawn independently from the prior), or both side by side."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Decode sampled codes into a grid of images."""
    from hashae import checkpoint
    from hashae.images import captioned_grid, side_by_side

    if prior not in ("calibrated", "naive", "both"):
        raise typer.BadParameter("use calibrated, naive or both", param_hint="--prior")
    model = checkpoint.load(model_dir)
    if len(model.config.input_shape) != 3:
        raise typer.BadParameter("this model was trained on vectors, not images: nothing to draw", param_hint="--model")
    chosen = ["calibrated", "naive"] if prior == "both" else [prior]
    panels = []
    for name in chosen:
        images = model.sample(count, calibrated=name == "calibrated", seed=seed).numpy()
        panels.append(captioned_grid(images, scale=2, title=f"{model.config.kind}: {name} codes"))
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side(panels).save(out)
    typer.echo(f"wrote {len(chosen) * count} samples to {out}")
