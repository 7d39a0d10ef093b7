"""`hashae datasets export fashion-mnist DIR`: built-in data sets as ordinary image folders."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import QuietOption, fail, handle_errors

app = typer.Typer(help="Built-in data sets.", no_args_is_help=True)

KNOWN = ("fashion-mnist",)


@app.command("export")
@handle_errors
def export(
    name: str = typer.Argument(..., help="Data set name: fashion-mnist."),
    out_dir: Path = typer.Argument(..., help="Folder to write <class>/<split>_<index>.png into."),
    split: str = typer.Option("train", "--split", help="train or test."),
    limit: int = typer.Option(None, "--limit", help="Export only the first N images.", min=1),
    quiet: bool = QuietOption,
) -> None:
    """Write a built-in data set as PNG files in one subfolder per class."""
    from hashae.cli.progress import reporter
    from hashae.datasets import export_fashion_mnist

    if name not in KNOWN:
        raise fail(f"unknown data set {name!r}; known: {', '.join(KNOWN)}")
    if split not in ("train", "test"):
        raise fail(f"unknown split {split!r}; use train or test")
    with reporter(quiet) as report:
        count = export_fashion_mnist(out_dir, split=split, limit=limit, report=report)
    typer.echo(f"exported {count} {name} {split} images to {out_dir}")
