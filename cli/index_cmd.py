"""`hashae index FOLDER`: train if needed, encode, store; incremental on re-runs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from hashae.cli.common import JsonOption, QuietOption, StoreOption, handle_errors, print_json, store_path

MIB = 1 << 20


def register(app: typer.Typer) -> None:
    app.command("index")(index)


@handle_errors
def index(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively; the first subfolder names the label)."),
    store: Path = StoreOption,
    bits: int = typer.Option(None, "--bits", help="Code length in bits, a multiple of 8 (default 32).", min=8),
    latent: int = typer.Option(None, "--latent", help="VAE latent size (default 32).", min=1),
    image_size: int = typer.Option(None, "--image-size", help="Images are resized to this square size (default 28).", min=4),
    color: bool = typer.Option(None, "--color/--grayscale", help="Colour or grayscale pixels (default: detected from the images).", show_default=False),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default: scaled to the folder size).", min=1),
    quality: str = typer.Option("fast", "--quality", help="fast, or high (about 3x longer training)."),
    retrain: bool = typer.Option(False, "--retrain", help="Train new models and re-encode everything (whatever state the old models are in)."),
    repoint: bool = typer.Option(False, "--repoint", help="Let this store index FOLDER although it was built from another folder; its items not found in FOLDER are removed."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="Training device: auto, cpu or cuda."),
    nproc: int = typer.Option(1, "--nproc", help="Training processes on this machine (torch DDP: gloo on CPU, nccl with one GPU each).", min=1),
    executor: str = typer.Option("auto", "--executor", help="Who reads and encodes: sequential (this process), processes (one worker per core), ray (a Ray cluster; pip install 'hashae[ray]'), or auto (processes from 20000 files to read)."),
    workers: int = typer.Option(None, "--workers", help="Worker processes for --executor processes, or CPUs of the private local Ray cluster (default: one per core).", min=1, show_default=False),
    backend: str = typer.Option(None, "--backend", help="Where a new store keeps its codes and latents: local (FAISS + SQLite in the store folder, the default) or milvus (a Milvus Lite file, or a server with --uri). An existing store keeps its own.", show_default=False),
    uri: str = typer.Option(None, "--uri", help="With --backend milvus: a Milvus server's URI (http://HOST:19530; token in $HASHAE_MILVUS_TOKEN) or a Lite .db file. Default: milvus.db in the store folder.", show_default=False),
    address: str = typer.Option(None, "--address", help="With --executor ray: a running cluster's HOST:PORT (ray start --head; every node sees FOLDER and the store at the same paths). Default: a private local cluster, started and stopped here.", show_default=False),
    batch_size: int = typer.Option(None, "--batch-size", help="Files per batch: one read + encode task and one catalogue transaction (default 1024).", min=1, show_default=False),
    max_file_size: float = typer.Option(64, "--max-file-size", help="Files larger than this many MiB are skipped unread, with the reason recorded."),
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Index a folder of images: train the models if the store has none, then encode and store
    every new or changed image; deleted files are dropped, unreadable ones recorded with a reason."""
    # One BLAS thread per process (unless the user set it): the executor's processes are the
    # parallelism; BLAS threads on top only wait for each other (8000 files: 13.6 s with two, 3.0 s
    # with one, on a busy 2-core machine). Set before numpy is imported, which this command does next.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from hashae.cli.progress import reporter
    from hashae.index.executors import check_executor
    from hashae.errors import ConfigError
    from hashae.launcher import under_torchrun
    from hashae.index.pipeline import IndexOptions, index_folder

    check_executor(executor, address=address)  # before the store is created
    if under_torchrun():
        raise ConfigError("hashae index is one writer that starts its own training processes: run it without torchrun (use --nproc N to train with N processes)")

    options = IndexOptions(
        bits=bits,
        latent_dim=latent,
        image_size=image_size,
        channels=None if color is None else (3 if color else 1),
        epochs=epochs,
        quality=quality,
        retrain=retrain,
        seed=seed,
        device=device,
        executor=executor,
        workers=workers,
        batch_size=batch_size,
        max_file_size=int(max_file_size * MIB),
        repoint=repoint,
        nproc=nproc,
        address=address,
        backend=backend,
        backend_uri=uri,
    )
    with reporter(quiet) as report:
        summary = index_folder(store_path(store), folder, options, report=report)
    if as_json:
        print_json(summary.as_dict())
    else:
        typer.echo(summary.line())
