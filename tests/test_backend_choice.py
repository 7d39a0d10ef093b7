"""`hashae index --backend milvus`: a store whose vectors live in Milvus Lite, through the same CLI
path as a local one; the store remembers its backend, and a re-run that changes nothing commits nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import draw_images

pytest.importorskip("pymilvus", reason="the Milvus backend needs the optional extra hashae[milvus]")
pytest.importorskip("milvus_lite", reason="the Milvus backend needs the optional extra hashae[milvus]")

from hashae.cli.main import app  # noqa: E402


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_index_into_milvus_then_query_and_rerun(tmp_path):
    folder, store = tmp_path / "images", tmp_path / "store"
    paths = draw_images(folder, 40)
    first = json.loads(run("index", str(folder), "--store", str(store), "--backend", "milvus", "--epochs", "1", "-q", "--json"))
    assert first["indexed"] == 40
    assert (store / "milvus-catalogue.db").is_file() and not (store / "catalogue.db").exists()

    answer = json.loads(run("query", str(folder / paths[7]), "--store", str(store), "-k", "3", "--json"))
    assert answer["results"][0]["path"] == paths[7] and answer["results"][0]["distance"] == 0

    again = json.loads(run("index", str(folder), "--store", str(store), "-q", "--json"))  # no --backend: remembered
    assert (again["indexed"], again["unchanged"], again["generation"]) == (0, 40, first["generation"])
    info = json.loads(run("info", "--store", str(store), "--json"))
    assert info["settings"]["backend"] == "milvus" and info["items"] == 40


def test_a_local_store_refuses_another_backend(tmp_path):
    folder, store = tmp_path / "images", tmp_path / "store"
    draw_images(folder, 12)
    run("index", str(folder), "--store", str(store), "--epochs", "1", "-q")
    result = CliRunner().invoke(app, ["index", str(folder), "--store", str(store), "--backend", "milvus", "-q"])
    assert result.exit_code == 1 and "local store" in result.output
