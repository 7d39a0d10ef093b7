"""`hashae serve` in a child process on a free loopback port, for scripts and tests that talk to a
real server over HTTP (benchmarks/serve_load.py, tests/serving.py).

    with ServeProcess(store, "--token", "s3cret") as server:
        httpx.get(server.url + "/api/health")
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ADDRESS_LINE = re.compile(r"at (http://\S+?)/?(\s|$)")


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
