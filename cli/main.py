"""The `hashae` command: one module per command, joined here."""

from __future__ import annotations

import re

import typer

from hashae.cli import bench, check, datasets, duplicates, export, generate, index_cmd, info, items, query, remove, train
from hashae.cli import inspect as inspect_cmd
from hashae.cli import serve

app = typer.Typer(
    name="hashae",
    help="Semantic hashing with autoencoders: learn short binary codes without labels, search them by bit flips.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)
app.add_typer(datasets.app, name="datasets")
index_cmd.register(app)
query.register(app)
duplicates.register(app)
info.register(app)
check.register(app)
train.register(app)
generate.register(app)
bench.register(app)
serve.register(app)
inspect_cmd.register(app)
items.register(app)
export.register(app)
remove.register(app)


def version() -> str:
    """The installed hashae's version (the source tree's when it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("hashae")
    except PackageNotFoundError:
        from hashae import __version__

        return __version__


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"hashae {version()}")
        raise typer.Exit()


@app.callback()
def options(
    show_version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    """Semantic hashing with autoencoders: learn short binary codes without labels, search them by bit flips."""


def first_sentence(text: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line (a command list's entry)."""
    paragraph = (text or "").strip().split("\n\n")[0]
    line = " ".join(paragraph.split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`])", line, maxsplit=1)[0]


def one_line_summaries(typer_app: typer.Typer) -> None:
    """Give every command without a short help the first sentence of its docstring, so the command
    list shows whole sentences on one line instead of a docstring's first paragraph broken where
    its source lines break."""
    for command in typer_app.registered_commands:
        if command.short_help is None:
            command.short_help = first_sentence(command.help or (command.callback.__doc__ if command.callback else None))
    for group in typer_app.registered_groups:
        if not isinstance(group.short_help, str):
            group.short_help = first_sentence(group.typer_instance.info.help if isinstance(group.typer_instance.info.help, str) else None)
        one_line_summaries(group.typer_instance)


one_line_summaries(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
