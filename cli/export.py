"""`hashae export`: a store's codes and latents as .npy files, with ids and paths beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from hashae.cli.common import QuietOption, StoreOption, fail, handle_errors, store_path

EXPORT_FILES = ("ids.npy", "codes.npy", "latents.npy", "items.jsonl", "export.json")


def register(app: typer.Typer) -> None:
    app.command("export")(export)


@handle_errors
def export(
    out: Path = typer.Option(..., "--out", help="Folder to write into (made if missing; its parent must exist)."),
    store: Path = StoreOption,
    force: bool = typer.Option(False, "--force", help="Overwrite the files of an earlier export in --out."),
    quiet: bool = QuietOption,
) -> None:
    """Write every item's code and latent as numpy files, with ids, paths and labels.

    In --out: ids.npy (int64, n), codes.npy (uint8, n x bits/8, packed bits, most significant bit
    first), latents.npy (float32, n x latent size, the VAE means), items.jsonl (one line per row:
    id, path, label), export.json (the store, generation, bits, latent size, row count). Row i of
    every file is the same item. Load with numpy.load; unpack codes with numpy.unpackbits(axis=1).
    """
    from hashae.index.api import Store

    if not out.parent.is_dir():
        raise fail(f"the folder {out.parent} does not exist; create it first")
    existing = [name for name in EXPORT_FILES if (out / name).exists()]
    if existing and not force:
        raise fail(f"{out} already holds an export ({', '.join(existing)}); add --force to overwrite it")
    with Store.open(store_path(store)) as opened:
        items = list(opened.items())
        ids = np.array([item.id for item in items], dtype=np.int64)
        codes, latents = opened.codes(ids), opened.latents(ids)
        summary = {
            "store": str(opened.root.resolve()),
            "generation": opened.generation,
            "source_root": opened.settings.source_root,
            "bits": opened.settings.bits,
            "latent_dim": opened.settings.latent_dim,
            "items": len(ids),
            "files": {"ids": "ids.npy", "codes": "codes.npy", "latents": "latents.npy", "items": "items.jsonl"},
        }
    out.mkdir(exist_ok=True)
    np.save(out / "ids.npy", ids)
    np.save(out / "codes.npy", np.ascontiguousarray(codes, dtype=np.uint8))
    np.save(out / "latents.npy", np.ascontiguousarray(latents, dtype=np.float32))
    with open(out / "items.jsonl", "w", encoding="ascii") as lines:  # \u escapes keep names that are not UTF-8
        for item in items:
            lines.write(json.dumps({"id": item.id, "path": item.path, "label": item.label}) + "\n")
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        typer.echo(f"exported {len(ids)} items ({summary['bits']}-bit codes, {summary['latent_dim']}-d latents, generation {summary['generation']}) to {out}", err=True)
