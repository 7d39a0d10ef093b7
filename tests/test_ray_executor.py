"""The Ray executor (issue 11) on a real local Ray cluster: the same results as the sequential
executor bit for bit, failed tasks retried, and `hashae index --executor ray` end to end.

One private cluster (2 CPUs, token auth off, its files under tmp) serves the in-process tests; the
CLI test runs hashae in a subprocess, which starts and stops its own private cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_images, index_quietly, store_state
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.errors import ConfigError
from hashae.folders import list_images
from hashae.index.backends import open_store
from hashae.index.encoder import ShardEncoder
from hashae.index.executors import SequentialExecutor, make_executor
from hashae.reader import ShardReader, make_shards

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'hashae[ray]'")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A private local Ray cluster for this module; RayExecutor uses this process's connection."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    for attempt in (1, 2):
        try:
            ray.init(
                address="local", num_cpus=2, object_store_memory=128 << 20, include_dashboard=False,
                _temp_dir=str(tmp_path_factory.mktemp("ray")), log_to_driver=False,
            )  # fmt: skip
            break
        except Exception as err:
            # Ray waits a fixed 30 s for its raylet to register; once in a full run (2026-12-01, quiet
            # machine) it never did and every test here errored, while this file alone passed right
            # after: one more start before giving up (the cause was not found).
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(err):
                raise
    yield
    ray.shutdown()


@pytest.fixture
def folder_with_a_corrupt_file(indexed_library, tmp_path) -> tuple[Path, Path]:
    """A copy of the indexed library with 30 new images and one corrupt PNG, and its store."""
    folder, store = indexed_library
    shutil.copytree(folder, tmp_path / "images")
    shutil.copytree(store, tmp_path / "store")
    draw_images(tmp_path / "images", 30, seed=12, prefix="added")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return tmp_path / "images", tmp_path / "store"


@dataclass(frozen=True)
class FailsFirstTime:
    """Doubles its item, but raises the first time it sees each item (a marker file records it)."""

    marker_dir: str

    def __call__(self, item: int) -> int:
        marker = Path(self.marker_dir) / f"{item}.{len(list(Path(self.marker_dir).glob(f'{item}.*')))}"
        marker.touch()
        if marker.suffix == ".0":
            raise OSError(f"item {item}: a transient failure")
        return 2 * item


@dataclass(frozen=True)
class AlwaysFails:
    marker_dir: str

    def __call__(self, item: int) -> int:
        (Path(self.marker_dir) / f"attempt-{len(list(Path(self.marker_dir).iterdir()))}").touch()
        raise OSError("always broken")


def test_ray_gives_the_sequential_results_bit_for_bit_and_workers_never_import_torch(ray_cluster, folder_with_a_corrupt_file):
    folder, store = folder_with_a_corrupt_file
    with open_store(store) as opened:
        models = opened.snapshot().models()
        task = ShardEncoder(ShardReader(size=28, channels=1), str(opened.model_dir(models.hashing)), str(opened.model_dir(models.latent)))
    shards = make_shards(folder, list_images(folder), shard_size=16)
    sequential = list(SequentialExecutor().map(task, shards))
    with make_executor("ray") as executor:
        assert executor.name == "ray" and executor.workers == 2  # the cluster's CPUs
        on_ray = list(executor.map(task, shards))
        probes = set(executor.map(eval, ["'torch' in __import__('sys').modules"] * 8))
    assert len(on_ray) == len(sequential) == len(shards)
    for one, other in zip(sequential, on_ray):
        assert one.files == other.files and one.skipped == other.skipped
        np.testing.assert_array_equal(one.codes, other.codes)
        np.testing.assert_array_equal(one.latents, other.latents)
    skipped = [entry for batch in on_ray for entry in batch.skipped]
    assert [entry.relpath for entry in skipped] == ["broken.png"] and skipped[0].reason
    assert "torch" in sys.modules and probes == {False}  # this process has torch, Ray's workers never
    assert ray.is_initialized()  # the caller's connection is left open


def test_ray_keeps_the_order_of_the_items(ray_cluster):
    with make_executor("ray") as executor:
        assert list(executor.map(abs, [-i for i in range(60)])) == list(range(60))
        assert list(executor.map(abs, [])) == []


def test_a_failed_task_is_retried(ray_cluster, tmp_path):
    (tmp_path / "flaky").mkdir()
    (tmp_path / "broken").mkdir()
    with make_executor("ray") as executor:
        assert list(executor.map(FailsFirstTime(str(tmp_path / "flaky")), range(6))) == [0, 2, 4, 6, 8, 10]
        with pytest.raises(OSError, match="always broken"):  # retried, then the run fails with the cause
            list(executor.map(AlwaysFails(str(tmp_path / "broken")), [1]))
    assert sorted(path.name for path in (tmp_path / "flaky").iterdir()) == sorted(f"{i}.{n}" for i in range(6) for n in (0, 1))
    assert len(list((tmp_path / "broken").iterdir())) == 1 + 3  # TASK_RETRIES


def test_index_on_ray_equals_index_in_this_process(ray_cluster, folder_with_a_corrupt_file, tmp_path):
    """The whole pipeline: the same ids, codes, labels, latents and skipped files as sequential."""
    folder, store = folder_with_a_corrupt_file
    results = {}
    for executor in ("sequential", "ray"):
        copy_folder, copy_store = tmp_path / executor / "images", tmp_path / executor / "store"
        shutil.copytree(folder, copy_folder)
        shutil.copytree(store, copy_store)
        summary = index_quietly(copy_store, copy_folder, executor=executor, batch_size=16)
        assert summary.executor.startswith(executor) and (summary.indexed, summary.skipped) == (30, 1)
        with open_store(copy_store) as opened:
            view = opened.snapshot()
            ids = view.item_ids()
            skipped = json.dumps([(s.path, s.reason) for s in opened.skipped()])
            results[executor] = (store_state(copy_store), view.latents_of(ids), skipped)
    (state_a, latents_a, skipped_a), (state_b, latents_b, skipped_b) = results.values()
    assert state_a == state_b and skipped_a == skipped_b
    np.testing.assert_array_equal(latents_a, latents_b)


def test_hashae_index_executor_ray_end_to_end(folder_with_a_corrupt_file, tmp_path):
    """The CLI in its own process: a private local cluster started and stopped, nothing left in HOME."""
    folder, store = folder_with_a_corrupt_file
    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="hr"))  # short: Ray's socket paths go under it
    environment = {**os.environ, "HOME": str(home), "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        environment.pop(name, None)
    command = [sys.executable, "-m", "hashae.cli.main", "index", str(folder), "--store", str(store), "-q", "--json",
               "--executor", "ray", "--workers", "2", "--batch-size", "16"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["indexed"], summary["skipped"], summary["executor"]) == (30, 1, "ray (2 workers)")
    assert list(temp.iterdir()) == []  # the cluster's folder is gone with it
    temp.rmdir()
    assert not (home / ".ray").exists()  # no auth token written for a private cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


def test_hashae_index_address_uses_a_running_cluster(folder_with_a_corrupt_file, tmp_path):
    """`ray start --head` (as on a cluster's head node), then hashae index --address HOST:PORT."""
    folder, store = folder_with_a_corrupt_file
    temp = Path(tempfile.mkdtemp(prefix="hr"))
    environment = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    environment.pop("RAY_ADDRESS", None)
    port = free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, seconds=60)
        command = [sys.executable, "-m", "hashae.cli.main", "index", str(folder), "--store", str(store), "-q", "--json",
                   "--executor", "ray", "--address", f"127.0.0.1:{port}", "--batch-size", "16"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["indexed"], summary["skipped"]) == (30, 1) and summary["executor"].startswith("ray")
    finally:
        os.killpg(head.pid, signal.SIGINT)  # ray start --block stops its processes (SIGTERM takes 30 s+)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_executor_options_are_checked():
    with pytest.raises(ConfigError, match="--address .* with --executor ray"):
        make_executor("processes", address="head:6379")
    result = CliRunner().invoke(app, ["index", ".", "--executor", "sequential", "--address", "head:6379"])
    assert result.exit_code != 0 and "--executor ray" in result.output


def test_missing_ray_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "ray" else find_spec(name, *args))
    with pytest.raises(ConfigError, match=r"pip install 'hashae\[ray\]'"):
        make_executor("ray")
