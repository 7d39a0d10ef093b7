"""`hashae bench [DIR]`: retrieval quality and speed of every method, side by side; with `--task
duplicates`, the near-duplicate bench (index/bench_duplicates.py)."""

from __future__ import annotations

import json
import platform
import shlex
import time
from pathlib import Path
from typing import Any

import typer

from hashae.cli.common import QuietOption, fail, handle_errors

TASKS = ("retrieval", "duplicates")
RETRIEVAL_DEFAULTS = {"bits": "16,32,64", "queries": 1000, "quality": "fast", "image_size": 28}
DUPLICATES_DEFAULT_BITS = 32
DUPLICATE_METHODS = "phash, dhash, pdq, pixels, codes, hamming, latent, hybrid"  # index/bench_duplicates.ALL_METHODS
DUPLICATE_TRANSFORMS = (  # index/copies.TRANSFORMS (not imported here: `hashae -h` stays fast)
    "identity, jpeg q50, jpeg q30, resize x0.5, brightness +30%, brightness -30%, contrast +30%, contrast -30%, "
    "blur r1, noise 0.05, shift 2px, crop 10%, pad 10%, rotate 5, rotate 15, hflip"
)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _csv(text: str, cast=str) -> tuple:
    return tuple(cast(part.strip()) for part in text.split(",") if part.strip())


@handle_errors
def bench(
    source: str = typer.Argument("fashion-mnist", help="fashion-mnist, or a folder of images in class subfolders (retrieval only)."),
    task: str = typer.Option("retrieval", "--task", help="retrieval: mAP, precision and recall of neighbours by label, and speed; duplicates: find the original of altered copies (JPEG, resize, blur, shift, crop, ...) among Fashion-MNIST's train images, beside pHash, dHash, PDQ and raw pixels."),
    bits: str = typer.Option(None, "--bits", help="Code lengths, comma-separated (retrieval; default 16,32,64); duplicates: one code length (default 32).", show_default=False),
    methods: str = typer.Option(None, "--methods", help="Comma-separated subset of the task's methods (default: all). Retrieval: lsh, pcah, itq, hashing, hybrid, linear, undercomplete, sparse, denoising, contractive, vae, pixels. Duplicates: " + DUPLICATE_METHODS + "."),
    queries: int = typer.Option(None, "--queries", help="Retrieval: number of queries (default 1000; Fashion-MNIST: drawn from the 10,000 test images with rng(0)).", min=1, show_default=False),
    db_limit: int = typer.Option(None, "--db-limit", help="Use only the first N database items (quick runs).", min=10),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs for every model (default: the product defaults).", min=1),
    quality: str = typer.Option(None, "--quality", help="fast or high, as in `hashae index` (default fast).", show_default=False),
    image_size: int = typer.Option(None, "--image-size", help="Retrieval, folder sources: images resized to this size (default 28).", min=4, show_default=False),
    store: Path = typer.Option(None, "--store", help="Duplicates: measure this store's models (`hashae index` made them) instead of training new ones; the database is still Fashion-MNIST's.", show_default=False),
    originals: int = typer.Option(None, "--originals", help="Duplicates: database images altered into copies, drawn with rng(0) (default 1000).", min=1, show_default=False),
    transforms: str = typer.Option(None, "--transforms", help="Duplicates: a comma-separated subset of the transforms (default: all): " + DUPLICATE_TRANSFORMS + "."),
    json_out: Path = typer.Option(None, "--json", help="Write the rows (retrieval: one object per method and bit length; duplicates: per method and transform, and each method's threshold) to this JSON file."),
    plot_out: Path = typer.Option(None, "--plot", help="Retrieval: write mAP-vs-bits and precision-recall plots to this PNG."),
    markdown_out: Path = typer.Option(None, "--markdown", help="Write the table(s) as Markdown to this file."),
    quiet: bool = QuietOption,
) -> None:
    """Measure retrieval quality (mAP, precision in radius 2, neighbour recall) and speed of the
    hashing autoencoder against LSH, PCAH, ITQ, the seed's other autoencoders, the VAE latent and raw
    pixels; or, with --task duplicates, how well each method finds copies (recall@1, recall@10,
    recall at a precision >= 99.9% threshold, per transform)."""
    if task not in TASKS:
        raise fail(f"--task {task!r}: use {' or '.join(TASKS)}", 2)
    for path in (json_out, plot_out, markdown_out):
        if path is not None:  # before a run that can take hours, not after it
            path.parent.mkdir(parents=True, exist_ok=True)
    if task == "retrieval":
        _refuse("retrieval", {"--store": store, "--originals": originals, "--transforms": transforms})
        _retrieval(
            source, bits=bits or RETRIEVAL_DEFAULTS["bits"], methods=methods, queries=queries or RETRIEVAL_DEFAULTS["queries"], db_limit=db_limit,
            epochs=epochs, quality=quality or RETRIEVAL_DEFAULTS["quality"], image_size=image_size or RETRIEVAL_DEFAULTS["image_size"],
            json_out=json_out, plot_out=plot_out, markdown_out=markdown_out, quiet=quiet,
        )
        return
    if source != "fashion-mnist":
        raise fail(f"--task duplicates measures on Fashion-MNIST (its protocol), not on {source!r}: leave the source out", 2)
    _refuse("duplicates", {"--queries": queries, "--image-size": image_size, "--plot": plot_out})
    if store is not None:  # the store's models are measured as they are: nothing is trained
        _refuse("duplicates with --store", {"--bits": bits, "--epochs": epochs, "--quality": quality})
        _check_store(store)
    given = {
        "--bits": bits, "--methods": methods, "--db-limit": db_limit, "--epochs": epochs, "--quality": quality, "--store": store,
        "--originals": originals, "--transforms": transforms, "--markdown": markdown_out, "--json": json_out,
    }
    command = shlex.join(["hashae", "bench", "--task", "duplicates", *(str(a) for flag, value in given.items() if value is not None for a in (flag, value))])
    _duplicates(
        bits=_one_code_length(bits), methods=methods, db_limit=db_limit, epochs=epochs, quality=quality or "fast", store=store,
        originals=originals, transforms=transforms, json_out=json_out, markdown_out=markdown_out, quiet=quiet, command=command,
    )


def _refuse(task: str, given: dict[str, Any]) -> None:
    """A one-line usage error (exit 2) naming the options that were given but do not apply to the task."""
    wrong = [name for name, value in given.items() if value is not None]
    if wrong:
        raise fail(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to --task {task}; see `hashae bench -h`", 2)


def _check_store(store: Path) -> None:
    """Open the store once, so a wrong --store fails now, not after the baselines have run."""
    from hashae.index.backends import open_store

    open_store(store).close()


def _one_code_length(bits: str | None) -> int:
    """The duplicates task's code length: one positive multiple of 8 (default 32)."""
    if bits is None:
        return DUPLICATES_DEFAULT_BITS
    try:
        (length,) = _csv(bits, int)
    except ValueError:
        raise fail(f"--bits {bits!r}: the duplicates task takes one code length, e.g. --bits 32", 2) from None
    if length <= 0 or length % 8:
        raise fail(f"--bits {bits!r}: a code length is a positive multiple of 8", 2)
    return length


def _retrieval(source: str, *, bits: str, methods: str | None, queries: int, db_limit: int | None, epochs: int | None, quality: str,
               image_size: int, json_out: Path | None, plot_out: Path | None, markdown_out: Path | None, quiet: bool) -> None:
    """The retrieval bench: one line per row as it is measured, then the files asked for."""
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
        json_out.write_text(json.dumps(document, indent=1))
    if markdown_out:
        markdown_out.write_text(markdown_table(result.rows) + "\n")
    if plot_out:
        plot(result, plot_out)
    typer.echo(f"bench: {len(result.rows)} rows on {result.info['data']} in {seconds:.0f}s")


def _duplicates(*, bits: int, methods: str | None, db_limit: int | None, epochs: int | None, quality: str, store: Path | None,
                originals: int | None, transforms: str | None, json_out: Path | None, markdown_out: Path | None, quiet: bool, command: str) -> None:
    """The near-duplicate bench (index/bench_duplicates.bench_task): its Markdown tables on stdout,
    and the files asked for."""
    from hashae.cli.progress import reporter
    from hashae.index.bench_duplicates import DuplicatesBenchOptions, bench_task

    chosen = {"methods": _csv(methods) if methods else None, "transforms": _csv(transforms) if transforms else None, "originals": originals}
    options = DuplicatesBenchOptions(
        bits=bits, db_limit=db_limit, epochs=epochs, quality=quality, store=store, **{key: value for key, value in chosen.items() if value is not None}
    )
    with reporter(quiet) as report:
        text = bench_task(options, markdown_path=markdown_out, json_path=json_out, report=report, command=command)
    typer.echo(text, nl=False)
