"""What every command shares: one-line errors, JSON output, the store option."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import typer

from hashae.errors import HashaeError

DEFAULT_STORE = ".hashae"

StoreOption = typer.Option(
    None, "--store", help="Store folder (default: $HASHAE_STORE or ./.hashae).", show_default=False
)
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress output (bars on a terminal, periodic lines otherwise).")
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")


def store_path(store: Path | None) -> Path:
    """The store folder from --store, else $HASHAE_STORE, else ./.hashae."""
    return Path(store or os.environ.get("HASHAE_STORE") or DEFAULT_STORE)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


SIGPIPE_EXIT = 141  # what a shell reports for a writer killed by SIGPIPE (128 + 13)


def handle_errors(command: Callable) -> Callable:
    """Turn library and file-system errors into one line on stderr and exit code 1; Ctrl-C into
    exit 130; a closed output pipe (`hashae query ... | head`) into a quiet exit, as Unix tools do."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(SIGPIPE_EXIT) from None
        except HashaeError as error:
            raise fail(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
        except OSError as error:  # a path the user gave is a file, unwritable, full, ...
            where = f"{error.filename}: " if error.filename else ""
            raise fail(f"{where}{error.strerror or error}") from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing what is left at exit cannot fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner's stdout)
        pass


def print_json(document: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(document, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
