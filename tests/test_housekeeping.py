"""Store housekeeping commands through CliRunner: `hashae items`, `hashae export`, `hashae remove-store`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from serving import small_store
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.index.api import Store


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory)


def test_items_lists_every_item_by_id(store):
    images, store_dir = store
    result = run("items", "--store", store_dir)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 200 and [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)
    assert all((images / path).is_file() and path.startswith(label + "/") for _, label, path in rows)


def test_items_json_label_and_limit(store):
    _, store_dir = store
    everything = json.loads(run("items", "--store", store_dir, "--json").stdout)
    assert len(everything["items"]) == 200 and everything["generation"] >= 1
    label = everything["items"][0]["label"]
    only = json.loads(run("items", "--store", store_dir, "--json", "--label", label, "--limit", 3).stdout)
    assert only["items"] == [i for i in everything["items"] if i["label"] == label][:3]
    assert set(only["items"][0]) == {"id", "path", "label", "size", "added_at"}
    assert run("items", "--store", store_dir, "--label", "no-such-label").stdout == ""
    assert run("items", "--store", store_dir, "--limit", 0).exit_code == 2


def test_export_writes_aligned_npy_files(store, tmp_path):
    _, store_dir = store
    out = tmp_path / "export"
    result = run("export", "--store", store_dir, "--out", out)
    assert result.exit_code == 0, result.output
    ids, codes, latents = (np.load(out / f"{name}.npy") for name in ("ids", "codes", "latents"))
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    summary = json.loads((out / "export.json").read_text())
    assert ids.dtype == np.int64 and codes.dtype == np.uint8 and latents.dtype == np.float32
    assert len(ids) == len(codes) == len(latents) == len(rows) == summary["items"] == 200
    assert codes.shape[1] * 8 == summary["bits"] and latents.shape[1] == summary["latent_dim"]
    with Store.open(store_dir) as opened:
        assert [r["id"] for r in rows] == ids.tolist()
        assert (opened.codes(ids[:10]) == codes[:10]).all() and (opened.latents(ids[-5:]) == latents[-5:]).all()
        assert rows[7]["path"] == opened.item(int(ids[7])).path

    again = run("export", "--store", store_dir, "--out", out)  # never overwrites without --force
    assert again.exit_code == 1 and "--force" in again.output
    assert run("export", "--store", store_dir, "--out", out, "--force").exit_code == 0
    nowhere = run("export", "--store", store_dir, "--out", tmp_path / "missing" / "export")
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.output
    assert not (tmp_path / "missing").exists()


def test_remove_store_deletes_only_the_store(store, tmp_path):
    images, store_dir = store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    refused = run("remove-store", "--store", copy)  # no terminal to confirm on: --yes needed
    assert refused.exit_code == 1 and "--yes" in refused.output and copy.is_dir()
    removed = run("remove-store", "--store", copy, "--yes")
    assert removed.exit_code == 0, removed.output
    assert not copy.exists() and images.is_dir() and any(images.rglob("*.png"))


def test_remove_store_refuses_what_is_not_a_store(store, tmp_path):
    images, _ = store
    for folder, words in ((images, "not a hashae store"), (tmp_path / "nothing", "there is no store")):
        result = run("remove-store", "--store", folder, "--yes")
        assert result.exit_code == 1 and words in result.output and "nothing removed" in result.output
    assert any(images.rglob("*.png"))
    posing = tmp_path / "photos"  # a folder of pictures with a catalogue.db in it is not removed either
    posing.mkdir()
    (posing / "catalogue.db").write_bytes(b"")
    (posing / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    result = run("remove-store", "--store", posing, "--yes")
    assert result.exit_code == 1 and "holds pictures" in result.output and (posing / "cat.jpg").is_file()


def test_remove_store_refuses_while_another_writer_holds_it(store, tmp_path):
    _, store_dir = store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    from hashae.index.backends import open_store

    with open_store(copy) as opened, opened.writer():
        result = run("remove-store", "--store", copy, "--yes")
    assert result.exit_code == 1 and copy.is_dir() and (copy / "catalogue.db").is_file()


def test_remove_store_removes_a_milvus_lite_store(tmp_path):
    pytest.importorskip("milvus_lite", reason="Milvus Lite is not installed (pip install 'hashae[milvus]')")
    from test_milvus_backend import DIM, fill

    from hashae.index.backends.milvus.store import MilvusStore

    folder = tmp_path / "store"
    opened = MilvusStore.open(folder, create=True)
    rng = np.random.default_rng(0)
    fill(opened, np.packbits(rng.random((20, 32)) < 0.5, axis=1), rng.random((20, DIM)).astype(np.float32), [f"i{i}.png" for i in range(20)])
    opened.close()
    assert (folder / "milvus.db").exists()
    result = run("remove-store", "--store", folder, "--yes")
    assert result.exit_code == 0, result.output
    assert not folder.exists()
