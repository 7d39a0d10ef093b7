"""Helpers for the server, browser and picture tests, and for benchmarks/serve_load.py: a small
real store, and `hashae serve` as a real subprocess on a free loopback port (ServeProcess).

    with ServeProcess(store, "--token", "s3cret") as server:
        httpx.get(server.url + "/api/health")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 200
START_TIMEOUT = 120  # seconds for `hashae serve` to print its address (loaded CI machines are slow)
ADDRESS_LINE = re.compile(r"at (http://\S+?)/?(\s|$)")


def cli(*args: object) -> str:
    """Run a hashae command in-process; its output (fails the test when the exit code is not 0)."""
    from typer.testing import CliRunner

    from hashae.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def small_store(tmp_path_factory, n: int = N_IMAGES) -> tuple[Path, Path]:
    """(images folder, store folder): n Fashion-MNIST images indexed with one epoch of training.

    Built once per test session (the first module to ask builds it; the others reuse it). Treat it
    as read-only: copy it (copy_store) to change it.
    """
    import pytest

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


class ServeProcess:
    """`python -m hashae.cli.main serve --store STORE --port 0 --host 127.0.0.1 *args`; .url once it listens.

    Entering waits (at most `timeout` seconds) for the line naming its address and raises
    RuntimeError with the server's output when none comes; leaving stops it (terminate, then kill).
    """

    def __init__(self, store: Path, *args: str, timeout: float = 120.0) -> None:
        self.command = [sys.executable, "-m", "hashae.cli.main", "serve", "--store", str(store), "--port", "0", "--host", "127.0.0.1", *args]
        self.timeout = timeout
        self.url: str | None = None
        self.output: list[str] = []
        self.startup_s = 0.0

    def __enter__(self) -> ServeProcess:
        started = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HASHAE_TOKEN", None)  # only an explicit --token guards the server
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                found = ADDRESS_LINE.search(line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()  # the server exited

        threading.Thread(target=read, daemon=True).start()
        ready.wait(self.timeout)
        if self.url is None:
            self.stop()
            raise RuntimeError(f"hashae serve did not start: {self.log()}")
        self.startup_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the server (kill it when it does not exit within 15 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """Everything the server printed so far."""
        return "".join(self.output)


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
