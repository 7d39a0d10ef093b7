"""`hashae items`: list what a store holds, one item a line."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import typer

from hashae.cli.common import JsonOption, StoreOption, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("items")(items)


@handle_errors
def items(
    store: Path = StoreOption,
    label: str | None = typer.Option(None, "--label", help="Only items with this label."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many items (by id)."),
    as_json: bool = JsonOption,
) -> None:
    """List the indexed items: id, label and path (relative to the indexed folder), by id.

    With --json, one document: the store, its generation and each item's id, path, label, size
    and when it was indexed.
    """
    from hashae.index.api import Store

    with Store.open(store_path(store)) as opened:
        chosen = list(islice(opened.items(label=label), limit))
        if as_json:
            print_json({
                "store": str(opened.root),
                "generation": opened.generation,
                "source_root": opened.settings.source_root,
                "items": [{"id": i.id, "path": i.path, "label": i.label, "size": i.size, "added_at": i.added_at} for i in chosen],
            })
            return
    for item in chosen:
        typer.echo(f"{item.id}\t{item.label or '-'}\t{item.path}")
