"""Helpers for the server, browser and picture tests: a small real store, and `hashae serve` as a
real subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

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


class Server:
    """`hashae serve --port 0 ...` in a subprocess; .url once it listens. Use as a context manager."""

    def __init__(self, store: Path, *args: str) -> None:
        self.command = [sys.executable, "-m", "cli.main", "serve", "--store", str(store), "--port", "0", *args]
        self.url: str | None = None
        self.output: list[str] = []

    def __enter__(self) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HASHAE_TOKEN", None)
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                found = re.search(r"at (http://\S+?)/?(\s|$)", line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(START_TIMEOUT)
        if self.url is None:
            self.__exit__()
            raise AssertionError(f"hashae serve did not start: {''.join(self.output)}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return "".join(self.output)


def wait_for(predicate, *, timeout: float, interval: float = 0.2) -> bool:
    """Poll predicate() until it is true or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
