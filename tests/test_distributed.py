"""Training with torch DDP (hashae.distributed + hashae.trainer): real 2-process gloo runs on CPU,
compared with one process on the same union batches. (No GPU here: the nccl path is not run.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hashae import checkpoint, distributed
from hashae.cli.main import app
from hashae.distributed import BatchShare, share_sizes
from hashae.errors import ConfigError
from hashae.recipes import fit
from hashae.trainer import TrainConfig
from hashae.variants import make_config

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def hashing_run():
    """The product's hashing recipe on images (masking corruption, shifted neighbours, InfoNCE,
    balance, gain, hard codes) plus noise and decorrelation, so every gathered statistic and every
    per-row random draw is exercised. 78 items: 7 held out, 71 trained in batches of 35 (shared
    18 + 17 between two ranks) and a last batch of 1 (fewer items than ranks: taken whole by both).
    SGD, not Adam: Adam scales the rounding-level gradient of a bias that the standardisation
    cancels up to the learning rate, so no two summation orders agree on it."""
    x = np.random.default_rng(0).random((78, 1, 8, 8), dtype=np.float32)
    config = make_config("hashing", input_shape=(1, 8, 8), code_size=8, hidden=(16,), decorrelation=1.0, noise_max=1.0)
    train_config = TrainConfig(epochs=2, batch_size=35, lr=1e-3, optimizer="sgd", val_fraction=0.1, patience=1, seed=3, device="cpu")
    return config, x, train_config


@pytest.fixture(scope="module")
def one_and_two_processes():
    config, x, train_config = hashing_run()
    one = fit(config, x, train_config)
    two = distributed.run(fit, args=(config, x, train_config), nproc=2, device="cpu")
    return one, two, x


def test_two_processes_take_the_steps_of_one(one_and_two_processes):
    one, two, x = one_and_two_processes
    ours, theirs = one.model.state_dict(), two.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:  # weights, normalisation, calibrated bit thresholds, code bank
        assert torch.allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-5), (name, (ours[name] - theirs[name]).abs().max())
    assert len(one.history.epochs) == len(two.history.epochs) == 2
    for mine, other in zip(one.history.epochs, two.history.epochs):  # whole-epoch means, held-out loss
        assert mine.keys() == other.keys()
        assert all(np.isclose(mine[k], other[k], rtol=1e-5, atol=1e-6) for k in mine), (mine, other)
    with torch.no_grad():
        same_bits = (one.model.bits(torch.from_numpy(x)) == two.model.bits(torch.from_numpy(x))).float().mean()
    assert same_bits >= 0.99


def test_the_result_comes_back_clean(one_and_two_processes):
    _, two, _ = one_and_two_processes
    assert two.model.batch_share is None and not two.model.training
    assert not torch.distributed.is_initialized()  # the group lived in the spawned processes only


def test_batch_shares():
    assert share_sizes(9, 2) == [5, 4] and share_sizes(1, 2) == [1, 0] and share_sizes(8, 4) == [2, 2, 2, 2]
    share = BatchShare(sizes=(5, 4), rank=1)
    assert share.take(torch.arange(9)).tolist() == [5, 6, 7, 8]
    # a per-row draw is made at the whole batch's shape: this rank's rows are the ones one process gets
    torch.manual_seed(0)
    whole = torch.randn(9, 3)
    torch.manual_seed(0)
    assert torch.equal(share.per_row(torch.randn_like, torch.zeros(4, 3)), whole[5:])


def test_one_process_is_a_plain_call():
    seen = []
    assert distributed.run(lambda a, *, report, b: (a, b, report), args=(1,), kwargs={"b": 2}, report=seen.append) == (1, 2, seen.append)


def test_nproc_and_torchrun_do_not_mix(monkeypatch):
    for name, value in zip(TORCHRUN_ENV, ("1", "2", "127.0.0.1", "29500", "1")):
        monkeypatch.setenv(name, value)
    assert distributed.under_torchrun() and not distributed.main_process()
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.run(print, nproc=2)


def test_index_refuses_torchrun_and_leaves_no_store(monkeypatch, tmp_path):
    """Under torchrun every rank would index the folder into one store: refused in one line."""
    for name, value in zip(TORCHRUN_ENV, ("0", "2", "127.0.0.1", "29500", "0")):
        monkeypatch.setenv(name, value)
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(app, ["index", str(tmp_path / "images"), "--store", str(tmp_path / "store")])
    assert result.exit_code == 1 and "without torchrun" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "store").exists()


def test_a_rank_error_comes_back_as_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where torch would leave its error files
    config, x, train_config = hashing_run()
    with pytest.raises(ConfigError, match="BCE needs inputs in"):  # pixels past 1 on both ranks
        distributed.run(fit, args=(config, x + 1, train_config), nproc=2, device="cpu")
    assert not list(tmp_path.iterdir())  # the failed ranks' error files went with the run's scratch


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "x.npy"
    np.save(path, np.random.default_rng(1).normal(size=(70, 12)).astype(np.float32))
    return path


TRAIN_FLAGS = ["--bits", "8", "--epochs", "2", "--batch-size", "16", "--set", "hidden=[16]", "--device", "cpu"]


def test_train_nproc_writes_one_checkpoint(vectors, tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", str(vectors), "--nproc", "2", "--out", str(out), "--json", *TRAIN_FLAGS])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["items"] == 70
    assert checkpoint.load(out).config.code_size == 8


def test_torchrun_trains_and_rank_0_alone_writes(vectors, tmp_path):
    out = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=distributed.loopback_interface() or "lo")
    env.update(TMPDIR=str(tmp_path))  # torchrun's torchelastic_* folders stay out of /tmp
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(distributed.free_port())]
    command = [*torchrun, "-m", "hashae.cli.main", "train", str(vectors), "--out", str(out), *TRAIN_FLAGS]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved to") == 1, done.stdout  # rank 1 neither prints nor writes
    assert checkpoint.load(out).config.code_size == 8


def test_index_nproc_trains_the_store_models_under_ddp(tmp_path):
    from conftest import draw_images

    folder, store = tmp_path / "images", tmp_path / "store"
    draw_images(folder, 30)
    flags = ["--nproc", "2", "--epochs", "1", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), *flags])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["indexed"] == 30 and summary["trained"]
    assert {role: fit["kind"] for role, fit in summary["training"].items()} == {"hashing": "hashing", "latent": "vae"}
