"""What every command shares: one-line errors, JSON output, the store option."""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
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
            raise fail(describe_os_error(error)) from None
        except sqlite3.Error as error:
            raise fail(describe_database_error(error)) from None
        except MemoryError:
            raise fail("out of memory; close other programs, or use a smaller --batch-size, and run the command again") from None
        except Exception as error:
            if type(error).__name__ != "SafetensorError":  # a bug: keep its traceback
                raise
            raise fail(describe_safetensors_error(error)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
FREE_SPACE_ADVICE = "free some space (or raise the quota or file size limit) and run the command again; what was committed before is kept"
DAMAGED_CATALOGUE_WORDS = ("malformed", "not a database", "could not decode", "corrupt")
DAMAGED_ADVICE = (
    "run `hashae check` (with the same --store) to see what is damaged, or move the store folder "
    "away and run `hashae index FOLDER` to rebuild it"
)


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: what failed where, and for a full disk what to do."""
    where = f"{error.filename}: " if error.filename else ""
    if error.errno in DISK_FULL_ERRNOS:
        return f"{where}the disk is full ({error.strerror or error}); {FREE_SPACE_ADVICE}"
    return f"{where}{error.strerror or error}"


def describe_database_error(error: sqlite3.Error) -> str:
    """One line for an error of the store's SQLite catalogue: a full disk, a damaged file, or other."""
    text = " ".join(str(error).split()) or type(error).__name__
    lowered = text.lower()
    if "disk is full" in lowered or "too big" in lowered:
        return f"the disk holding the store is full (the catalogue said: {text}); {FREE_SPACE_ADVICE}"
    if any(word in lowered for word in DAMAGED_CATALOGUE_WORDS):
        return f"the store's catalogue is damaged ({text}); {DAMAGED_ADVICE}"
    if "disk i/o error" in lowered:  # SQLite says no more: a full disk, a file size limit, a failing disk
        return (
            f"cannot write the store's catalogue ({text}): the disk may be full, a file size limit reached or the "
            f"disk failing; {FREE_SPACE_ADVICE} (check the disk if it has space)"
        )
    if "readonly" in lowered or "unable to open" in lowered:
        return f"cannot open the store's catalogue for writing ({text}); check the folder's permissions, then run the command again"
    return f"the store's catalogue failed ({text}); {DAMAGED_ADVICE}"


def describe_safetensors_error(error: Exception) -> str:
    """One line for a failed checkpoint write or read (safetensors reports I/O errors as text)."""
    text = " ".join(str(error).split())
    if "no space left" in text.lower() or "os error 28" in text.lower() or "file too large" in text.lower():
        return f"the disk is full while writing a model checkpoint ({text}); {FREE_SPACE_ADVICE}"
    return f"a model checkpoint could not be written or read ({text}); check the disk and run the command again"


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
