"""`hashae bench [DIR]`: retrieval quality and speed of every method, side by side."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import typer

from hashae.cli.common import QuietOption, handle_errors


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _csv(text: str, cast=str) -> tuple:
    return tuple(cast(part.strip()) for part in text.split(",") if part.strip())


@handle_errors
def bench(
    source: str = typer.Argument("fashion-mnist", help="fashion-mnist, or a folder of images in class subfolders."),
    bits: str = typer.Option("16,32,64", "--bits", help="Code lengths, comma-separated."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset of: lsh, pcah, itq, hashing, hybrid, linear, undercomplete, sparse, denoising, contractive, vae, pixels (default: all)."),
    queries: int = typer.Option(1000, "--queries", help="Number of queries (Fashion-MNIST: drawn from the 10,000 test images with rng(0)).", min=1),
    db_limit: int = typer.Option(None, "--db-limit", help="Use only the first N database items (quick runs).", min=10),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs for every model (default: the product defaults).", min=1),
    quality: str = typer.Option("fast", "--quality", help="fast or high, as in `hashae index`."),
    image_size: int = typer.Option(28, "--image-size", help="Folder sources: images resized to this size.", min=4),
    json_out: Path = typer.Option(None, "--json", help="Write the rows (one object per method and bit length) to this JSON file."),
    plot_out: Path = typer.Option(None, "--plot", help="Write mAP-vs-bits and precision-recall plots to this PNG."),
    markdown_out: Path = typer.Option(None, "--markdown", help="Write the table as Markdown to this file."),
    quiet: bool = QuietOption,
) -> None:
    """Measure retrieval quality (mAP, precision in radius 2, neighbour recall) and speed of the
    hashing autoencoder against LSH, PCAH, ITQ, the seed's other autoencoders, the VAE latent and raw pixels."""
    from hashae.cli.progress import reporter
    from hashae.index.bench import ALL_METHODS, BenchOptions, format_row, header, markdown_table, plot, run_bench

    options = BenchOptions(
        source=source,
        bits=_csv(bits, int),
        methods=_csv(methods) if methods else ALL_METHODS,
        queries=queries,
        db_limit=db_limit,
        epochs=epochs,
        quality=quality,
        image_size=image_size,
    )
    started = time.perf_counter()
    typer.echo(header())
    with reporter(quiet) as report:
        result = run_bench(options, report=report, on_row=lambda row: typer.echo(format_row(row)))
    seconds = time.perf_counter() - started
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    document = {"rows": result.rows, "pr_curves": result.pr_curves, "info": {**result.info, "seconds": round(seconds, 1), "machine": machine}}
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=1))
    if markdown_out:
        markdown_out.write_text(markdown_table(result.rows) + "\n")
    if plot_out:
        plot(result, plot_out)
    typer.echo(f"bench: {len(result.rows)} rows on {result.info['data']} in {seconds:.0f}s")
