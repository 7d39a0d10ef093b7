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
    from hashae.index.backends import open_store

    with open_store(store_path(store)) as opened:
        document = opened.info()
    if as_json:
        print_json(document)
        return
    echo = typer.echo
    if document["empty"]:
        echo(f"the store at {document['store']} is empty: run `hashae index FOLDER`")
        if document["pending"]["added"]:
            echo(f"pending     {document['pending']['added']} items not committed yet (a run was interrupted)")
    else:
        echo(f"store       {document['store']}")
        echo(f"generation  {document['generation']} ({document['committed_at']})")
        echo(f"items       {document['items']}")
        echo(f"codes       {document['bits']} bits, VAE latent {document['latent_dim']}")
        for role, model in document["models"].items():
            if model:
                echo(f"{role:<11} {_describe_model(model)}")
    skipped = document["skipped"]
    if skipped or not document["empty"]:
        echo(f"skipped     {len(skipped)}")
    for entry in skipped[:SKIPPED_SHOWN]:
        echo(f"  {printable(entry['path'])}: {printable(entry['reason'])}")
    if len(skipped) > SKIPPED_SHOWN:
        echo(f"  ... and {len(skipped) - SKIPPED_SHOWN} more (--json lists all)")


def _describe_model(model: dict) -> str:
    info = model["info"]
    stats = info.get("code_stats")
    extra = f", {_code_stats_line(stats)}" if stats else ""
    return f"{model['kind']} ({info.get('epochs', '?')} epochs, {info.get('seconds', '?')}s{extra})"


def _code_stats_line(stats: dict) -> str:
    """Saturation, bit balance, bit entropy and noise flips of a binary-code model (held-out data)."""
    parts = [f"{stats['saturated_share']:.1%} saturated", f"bit balance std {stats['bit_balance_std']:.3f}"]
    if stats.get("mean_bit_entropy") is not None:
        parts.append(f"bit entropy {stats['mean_bit_entropy']:.3f}")
    if stats.get("noise_flip_share") is not None:
        parts.append(f"{stats['noise_flip_share']:.1%} bits flip under the training noise")
    return ", ".join(parts)


def printable(name: str) -> str:
    """A file name as a terminal can show it: bytes that are not UTF-8 escaped as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
