"""`hashae check`: a read-only integrity check of a store."""

from __future__ import annotations

from pathlib import Path

import typer

from hashae.cli.common import JsonOption, StoreOption, handle_errors, print_json, store_path


def register(app: typer.Typer) -> None:
    app.command("check")(check)


@handle_errors
def check(store: Path = StoreOption, as_json: bool = JsonOption) -> None:
    """Check a store for damage without changing it: the catalogue (SQLite's integrity check, every
    row read back), the index files and the model files against their recorded digests.

    Exit status 0 when nothing is wrong, 1 with one line per problem otherwise.
    """
    from hashae.index.backends.check import check_store

    report = check_store(store_path(store))
    if as_json:
        print_json(report.as_dict())
    elif report.ok:
        typer.echo(f"ok: {report.store} ({'; '.join(report.checked)})")
    else:
        for problem in report.problems:
            typer.echo(f"problem: {problem}", err=True)
        advice = (
            "the catalogue is damaged: move the store folder away and run `hashae index FOLDER` to rebuild it"
            if report.catalogue_damaged
            else "each line above says what to do"
        )
        typer.echo(f"error: {len(report.problems)} problem(s) in the store at {report.store}; {advice}", err=True)
    if not report.ok:
        raise typer.Exit(1)
