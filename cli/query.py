"""`hashae query IMG... | --id N`: the most similar indexed items."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import JsonOption, StoreOption, fail, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("query")(query)


@handle_errors
def query(
    images: list[Path] = typer.Argument(None, help="Query image files.", show_default=False),
    ids: list[int] = typer.Option([], "--id", help="Query with an indexed item (repeatable)."),
    k: int = typer.Option(None, "-k", "--k", help="Number of results (default 10; all within --radius when it is given).", min=1),
    radius: int = typer.Option(None, "--radius", "-r", help="Every item within this many bit flips (Hamming mode).", min=0),
    mode: str = typer.Option("hamming", "--mode", "-m", help="hamming (bit flips), latent (VAE FAISS), hybrid (Hamming shortlist re-ranked by latent distance)."),
    store: Path = StoreOption,
    sheet: Path = typer.Option(None, "--sheet", help="Also draw a contact sheet of the query and its results to this PNG."),
    as_json: bool = JsonOption,
) -> None:
    """Find the indexed items most similar to each query."""
    from hashae.index.query import QueryEngine
    from hashae.index.backends.local.store import Store

    if not images and not ids:
        raise fail("give at least one image file or --id", 2)
    with Store.open(store_path(store)) as opened:
        engine = QueryEngine(opened, hamming_strategy="scan")  # one-shot process: see QueryEngine
        answers = [engine.query_image(path, label=str(path), mode=mode, k=k, radius=radius) for path in images or []]
        answers += [engine.query_id(item_id, mode=mode, k=k, radius=radius) for item_id in ids]
        for answer in answers:
            if as_json:
                print_json(answer.as_dict())
            else:
                print_table(answer)
        if sheet:
            from hashae.index.sheets import contact_sheet

            contact_sheet(engine, answers, sheet)
            if not as_json:
                typer.echo(f"contact sheet written to {sheet}")


def print_table(answer) -> None:
    """Rank, distance, path and label of each hit, under a header naming the query."""
    within = f" within radius {answer.radius}" if answer.radius is not None else ""
    typer.echo(f"query {answer.query} ({answer.mode}{within}): {len(answer.hits)} results")
    typer.echo(f"{'rank':>4}  {'distance':>9}  {'id':>7}  {'label':<14} path")
    for rank, hit in enumerate(answer.hits, start=1):
        distance = f"{hit.distance:9d}" if isinstance(hit.distance, int) else f"{hit.distance:9.4f}"
        typer.echo(f"{rank:>4}  {distance}  {hit.id:>7}  {str(hit.label or '-'):<14} {hit.path}")
