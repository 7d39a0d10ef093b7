"""Helpers for the server, browser and picture tests: a small real store, and `hashae serve` as a
real subprocess on a free loopback port."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.index.serve_process import ServeProcess

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 200
START_TIMEOUT = 120  # seconds for `hashae serve` to print its address (loaded CI machines are slow)


def cli(*args: object) -> str:
    """Run a hashae command in-process; its output (fails the test when the exit code is not 0)."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def small_store(tmp_path_factory, n: int = N_IMAGES) -> tuple[Path, Path]:
    """(images folder, store folder): n Fashion-MNIST images indexed with one epoch of training.

    Built once per test session (the first module to ask builds it; the others reuse it). Treat it
    as read-only: copy it (copy_store) to change it.
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed ({FASHION_DIR}); run `make data`")
    root = tmp_path_factory.getbasetemp() / f"serve-store-{n}"
    images, store = root / "images", root / "store"
    if not (root / "built").is_file():
        shutil.rmtree(root, ignore_errors=True)
        cli("datasets", "export", "fashion-mnist", images, "--limit", n, "-q")
        cli("index", images, "--store", store, "--epochs", 1, "-q")
        (root / "built").write_text("ok")
    return images, store


def copy_store(images: Path, store: Path, dest: Path) -> tuple[Path, Path]:
    """A private copy of a store and its images (file times kept, so re-indexing the copy is
    incremental; the copied store reads thumbnails from the original folder until its next commit)."""
    new_images, new_store = dest / "images", dest / "store"
    shutil.copytree(images, new_images)
    shutil.copytree(store, new_store)
    return new_images, new_store


class Server(ServeProcess):
    """`hashae serve --port 0 ...` in a subprocess; .url once it listens. Use as a context manager."""

    def __init__(self, store: Path, *args: str) -> None:
        super().__init__(store, *args, timeout=START_TIMEOUT)


def wait_for(predicate, *, timeout: float, interval: float = 0.2) -> bool:
    """Poll predicate() until it is true or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
