"""The `hashae` command: one module per command, joined here."""

from __future__ import annotations

import typer

from hashae.cli import bench, datasets, generate, index_cmd, info, query, train
from hashae.cli import inspect as inspect_cmd
from hashae.cli import serve

app = typer.Typer(
    name="hashae",
    help="Semantic hashing with autoencoders: learn short binary codes without labels, search them by bit flips.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(datasets.app, name="datasets")
index_cmd.register(app)
query.register(app)
info.register(app)
train.register(app)
generate.register(app)
bench.register(app)
serve.register(app)
inspect_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
