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
        if not document["empty"]:
            document["duplicates_threshold"] = _duplicates_threshold(opened.root, document)
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
        echo(f"duplicates  {_describe_threshold(document['duplicates_threshold'])}")
    skipped = document["skipped"]
    if skipped or not document["empty"]:
        echo(f"skipped     {len(skipped)}")
    for entry in skipped[:SKIPPED_SHOWN]:
        echo(f"  {printable(entry['path'])}: {printable(entry['reason'])}")
    if len(skipped) > SKIPPED_SHOWN:
        echo(f"  ... and {len(skipped) - SKIPPED_SHOWN} more (--json lists all)")


def _duplicates_threshold(root: Path, document: dict) -> dict | None:
    """The store's own duplicates threshold as kept for its models (None: not measured yet)."""
    from hashae.index.calibration import kept_threshold

    models = document["models"]
    kept = kept_threshold(Path(root) / models["latent"]["dir"], model_ids=(models["hashing"]["id"], models["latent"]["id"]), items=document["items"], bits=document["bits"])
    return None if kept is None else kept.as_dict()


def _describe_threshold(kept: dict | None) -> str:
    if kept is None:
        return "threshold not measured for these models and this store size (the next `hashae duplicates` measures it on altered copies of the store's files)"
    limit = f"Hamming <= {kept['threshold']['radius']}, latent <= {kept['threshold']['latent_max']:.4g}"
    if kept["threshold_source"] == "store":
        c = kept["calibration"]
        return f"{limit} (measured on {c['copies']} altered copies of the store's files: precision {c['precision']:.4f}, {c['recall']:.0%} of the copies found)"
    return f"{limit}, the bench's ({kept['threshold_note']})"


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
