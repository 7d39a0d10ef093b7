"""`hashae duplicates`: every group of near-duplicate items in a store."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from hashae.cli.common import JsonOption, QuietOption, StoreOption, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("duplicates")(duplicates)


@handle_errors
def duplicates(
    threshold: int = typer.Option(None, "--threshold", "-t", help="Hamming distance in bits within which two items are copies (default: the radius the threshold is calibrated at for precision 99.9%; the output says which).", min=0, show_default=False),
    latent_max: float = typer.Option(None, "--latent-max", help="Also require a squared distance between VAE means at most this (default: this store's own limit, measured on altered copies of its files when its models were trained and kept with them; the bench's where it cannot be measured).", min=0.0, show_default=False),
    codes_only: bool = typer.Option(False, "--codes-only", help="Group by Hamming distance alone, without the latent confirmation (looser: look-alikes join)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Measure the latent limit for --precision (99.9% by default) on altered copies (JPEG, resize, blur, noise, shift, crop, rotation, ...) of this store's own files again now (3-6 s for 1,000 files); at the default radius, sample and precision it is kept as the store's default."),
    # 1000: index/calibration.DEFAULT_SAMPLE, not imported here (commands import their modules when run)
    sample: int = typer.Option(1000, "--sample", help="With --calibrate: how many of the store's files to alter.", min=1),
    precision: float = typer.Option(0.999, "--precision", help="With --calibrate: the share of the pairs within the threshold that must be copies.", min=0.5, max=1.0),
    store: Path = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """List every group of near-duplicate items in the store: exact copies (the same file content)
    and altered copies (re-encoded, resized, retouched) of one image. Each group is anchored on its
    earliest file; every member is within the threshold of the anchor."""
    from hashae.cli.progress import reporter
    from hashae.index.backends import open_store
    from hashae.index.calibration import duplicates_threshold, measure_threshold
    from hashae.index.duplicates import duplicates_document
    from hashae.index.query import QueryEngine

    if codes_only and latent_max is not None:
        raise typer.BadParameter("give either --codes-only or --latent-max", param_hint="--codes-only")
    if calibrate and (codes_only or latent_max is not None):
        raise typer.BadParameter("--calibrate measures the latent limit: leave out --codes-only and --latent-max", param_hint="--calibrate")
    started = time.perf_counter()
    with open_store(store_path(store)) as opened, reporter(quiet) as report:  # not short-lived: many look-ups
        view = opened.snapshot()
        engine = QueryEngine.over(view, where=opened.root)
        if calibrate:
            chosen = measure_threshold(engine, sample=sample, radius=threshold, target=precision, report=report)
        else:
            chosen = duplicates_threshold(engine, radius=threshold, latent_max=latent_max, codes_only=codes_only, report=report)
        document = {**duplicates_document(view, threshold=chosen.threshold, report=report), **chosen.as_dict()}
    document["seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        print_json(document)
    else:
        print_table(document)


def print_table(document: dict) -> None:
    """A summary line, then one line per grouped item: group number, id, distances to the group's
    anchor, how it matches (anchor, exact copy, near copy), path."""
    from hashae.cli.info import printable

    limit = document["threshold"]["latent_max"]
    latent = "codes only" if limit is None else f"latent <= {limit:g}"
    typer.echo(
        f"{len(document['groups'])} groups of near-duplicates, {document['grouped_items']} of {document['items']} items "
        f"(Hamming <= {document['threshold']['radius']}, {latent}; {document['seconds']:.1f}s)"
    )
    if "calibration" in document:
        c = document["calibration"]
        typer.echo(f"threshold calibrated on {c['copies']} altered copies of {c['originals']} of the store's files: precision {c['precision']:.4f}, {c['recall']:.0%} of the copies found")
    elif document["threshold_source"] == "bench":
        typer.echo(f"threshold calibrated on the near-duplicate bench (Fashion-MNIST){'; ' + document['threshold_note'] if 'threshold_note' in document else ''}")
    if not document["groups"]:
        return
    typer.echo(f"{'group':>5}  {'id':>7}  {'hamming':>7}  {'latent':>8}  {'match':<6} path")
    for number, group in enumerate(document["groups"], start=1):
        for rank, member in enumerate(group["members"]):
            match = "anchor" if rank == 0 else ("exact" if member["exact"] else "near")
            typer.echo(f"{number:>5}  {member['id']:>7}  {member['hamming']:>7}  {member['latent']:>8.4f}  {match:<6} {printable(member['path'])}")
