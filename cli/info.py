"""`hashae info`: what a store holds."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import JsonOption, StoreOption, handle_errors, print_json, store_path

SKIPPED_SHOWN = 20


def register(app: typer.Typer) -> None:
    app.command("info")(info)


@handle_errors
def info(store: Path = StoreOption, as_json: bool = JsonOption) -> None:
    """Items, skipped files and why, models and their code statistics."""
    from hashae.index.backends.local.store import Store

    with Store.open(store_path(store)) as opened:
        document = opened.info()
    if as_json:
        print_json(document)
        return
    echo = typer.echo
    echo(f"store       {document['store']}")
    echo(f"generation  {document['generation']} ({document['committed_at'] or 'nothing committed yet'})")
    echo(f"items       {document['items']}")
    echo(f"codes       {document['bits']} bits, VAE latent {document['latent_dim']}")
    for role, model in document["models"].items():
        if model:
            stats = model["info"].get("code_stats")
            extra = f", {stats['saturated_share']:.1%} saturated, bit balance std {stats['bit_balance_std']:.3f}" if stats else ""
            echo(f"{role:<11} {model['kind']} ({model['info'].get('epochs', '?')} epochs, {model['info'].get('seconds', '?')}s{extra})")
    skipped = document["skipped"]
    echo(f"skipped     {len(skipped)}")
    for entry in skipped[:SKIPPED_SHOWN]:
        echo(f"  {entry['path']}: {entry['reason']}")
    if len(skipped) > SKIPPED_SHOWN:
        echo(f"  ... and {len(skipped) - SKIPPED_SHOWN} more (--json lists all)")
