"""`hashae query IMG... | --id N`: the most similar indexed items."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hashae.cli.common import JsonOption, StoreOption, fail, handle_errors, print_json, store_path
from hashae.errors import DataError

def register(app: typer.Typer) -> None:
    app.command("query")(query)


@handle_errors
def query(
    images: list[Path] = typer.Argument(None, help="Query image files.", show_default=False),
    ids: list[int] = typer.Option([], "--id", help="Query with an indexed item (repeatable)."),
    k: int = typer.Option(None, "-k", "--top", help="Number of results (default 10; all within --radius when it is given).", min=1),
    radius: int = typer.Option(None, "--radius", "-r", help="Every item within this many bit flips (Hamming mode).", min=0),
    mode: str = typer.Option("hamming", "--mode", "-m", help="hamming (bit flips), latent (VAE FAISS), hybrid (the Hamming top max(k, 1000) re-ranked by latent distance)."),
    ties: str = typer.Option("latent", "--ties", help="Order within equal Hamming distance: latent (by VAE-mean distance, so an image's own file or a re-encoded copy comes first) or id."),
    store: Path = StoreOption,
    sheet: Path = typer.Option(None, "--sheet", help="Also draw a contact sheet of the queries and their results to this PNG (its folder must exist)."),
    as_json: bool = JsonOption,
) -> None:
    """Find the indexed items most similar to each query. A query that cannot be answered (an
    unreadable image, an unknown id) is reported on stderr; the others are answered, and the exit
    code is then 1."""
    from hashae.index.backends import open_store
    from hashae.index.query import QueryEngine
    from hashae.index.search import QueryError, check_query

    if not images and not ids:
        raise fail("give at least one image file or --id", 2)
    check_query(mode=mode, k=k, radius=radius, ties=ties)
    if sheet:
        check_output_folder(sheet)
    opened = open_store(store_path(store), short_lived=True)  # one-shot: see open_store
    try:
        engine = QueryEngine.open(opened)
        check_query(mode=mode, k=k, radius=radius, ties=ties, bits=engine.settings.bits)
        options = {"mode": mode, "k": k, "radius": radius, "ties": ties}
        queries = [(str(path), lambda path=path: engine.query_image(path, label=str(path), **options)) for path in images or []]
        queries += [(f"--id {item_id}", lambda item_id=item_id: engine.query_id(item_id, **options)) for item_id in ids]
        answers, failed = [], 0
        for name, answer_query in queries:
            try:
                answer = answer_query()
            except (DataError, QueryError, OSError) as error:  # this query only: say why, go on
                failed += 1
                _report(name, error)
                continue
            answers.append(answer)
            if as_json:
                print_json(answer.as_dict())
            else:
                print_table(answer)
            sys.stdout.flush()
        if sheet and answers:
            from hashae.index.sheets import contact_sheet

            contact_sheet(engine, answers, sheet)
            if not as_json:
                typer.echo(f"contact sheet written to {sheet}")
    finally:
        opened.close()
    if failed:
        raise typer.Exit(1)


def print_table(answer) -> None:
    """Rank, distance, path and label of each hit, under a header naming the query."""
    within = f" within radius {answer.radius}" if answer.radius is not None else ""
    typer.echo(f"query {answer.query} ({answer.mode}{within}): {len(answer.hits)} results")
    typer.echo(f"{'rank':>4}  {'distance':>9}  {'id':>7}  {'label':<14} path")
    for rank, hit in enumerate(answer.hits, start=1):
        distance = f"{hit.distance:9d}" if isinstance(hit.distance, int) else f"{hit.distance:9.4f}"
        typer.echo(f"{rank:>4}  {distance}  {hit.id:>7}  {str(hit.label or '-'):<14} {hit.path}")


def check_output_folder(path: Path) -> None:
    """Refuse an output path whose folder is missing (never created silently) or not a folder."""
    folder = path.parent
    if not folder.exists():
        raise fail(f"cannot write {path}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise fail(f"cannot write {path}: {folder} is not a folder")


def _report(name: str, error: Exception) -> None:
    """One line on stderr naming the query that could not be answered, and why."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, OSError):
        text = error.strerror or text
    typer.echo(f"error: {text}" if name.removeprefix("--id ") in text else f"error: {name}: {text}", err=True)
