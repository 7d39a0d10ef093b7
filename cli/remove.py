"""`hashae remove-store`: delete a store folder, and nothing that is not one."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from hashae.cli.common import StoreOption, fail, handle_errors, store_path

STORE_CATALOGUES = ("catalogue.db", "milvus-catalogue.db")  # the local and the Milvus backend's


def register(app: typer.Typer) -> None:
    app.command("remove-store")(remove_store)


@handle_errors
def remove_store(
    store: Path = StoreOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a store folder: its catalogue, codes, latents, indexes and models. The indexed
    pictures are never touched.

    Refuses a folder that is not a hashae store (no catalogue), one holding image files, and a
    store another process is writing to. A `hashae serve` of the store stops answering.
    """
    from hashae.index.backends import open_store

    path = store_path(store)
    if not path.is_dir():
        raise fail(f"there is no store at {path}; nothing removed")
    reason = not_a_store_reason(path)
    if reason:
        raise fail(f"{path} is not a hashae store ({reason}); nothing removed")
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"removing {path} cannot be undone: add --yes to remove it")
        typer.confirm(f"Remove the store {path} and everything in it?", abort=True)
    with open_store(path) as opened:
        settings = opened.settings()
        with opened.writer():  # no other writer, and none can start until the folder is gone
            shutil.rmtree(path)
    typer.echo(f"removed the store {path}", err=True)
    if settings is not None and settings.backend_uri and "://" in settings.backend_uri:
        typer.echo(f"its items on the Milvus server {settings.backend_uri} were left there", err=True)


def not_a_store_reason(path: Path) -> str | None:
    """Why the folder is not one hashae made, or None: it has no catalogue, or image files lie in it."""
    if not any((path / name).is_file() for name in STORE_CATALOGUES):
        return f"no {' or '.join(STORE_CATALOGUES)} in it"
    from hashae.decode import has_image_extension

    for folder, _, files in os.walk(path):
        pictures = [name for name in files if has_image_extension(name)]
        if pictures:
            return f"it holds pictures, such as {Path(folder, pictures[0])}"
    return None
