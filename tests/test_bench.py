"""`hashae bench` end to end on a small labelled folder: every asked row, the JSON and Markdown
outputs, and the hybrid row answered by the search module (on a database smaller than the hybrid
shortlist the product's hybrid ranks every item by VAE-mean distance: exactly as the vae row).
`hashae bench --task duplicates` on a tiny configuration of the near-duplicate bench, and the
one-line refusals of options that belong to the other task."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FASHION_TRAIN_IMAGES, draw_images
from serving import small_store
from typer.testing import CliRunner

from hashae.cli.bench import DUPLICATE_METHODS, DUPLICATE_TRANSFORMS
from hashae.cli.main import app
from hashae.index.bench.run import _answer_then_hamming
from hashae.index.bench_duplicates import ALL_METHODS as DUPLICATES_ALL_METHODS
from hashae.index.copies import TRANSFORMS
from hashae.index.search import HYBRID_SHORTLIST


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench") / "images"
    draw_images(folder, 150, seed=3)  # five classes of drawn shapes
    return folder


def test_bench_rows_and_outputs(folder, tmp_path, one_faiss_thread):
    out_json, out_md = tmp_path / "rows.json", tmp_path / "rows.md"
    args = ["bench", str(folder), "--bits", "8,16", "--methods", "itq,hashing,hybrid,vae", "--epochs", "1", "--queries", "25", "--db-limit", "80"]
    result = CliRunner().invoke(app, [*args, "--json", str(out_json), "--markdown", str(out_md), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(out_json.read_text())
    rows = document["rows"]
    assert [(r["method"], r["bits"]) for r in rows] == [
        ("itq", 8), ("hashing", 8), ("hybrid", 8), ("itq", 16), ("hashing", 16), ("hybrid", 16), ("vae", 1024)
    ]
    assert document["info"]["database"] == 80 < HYBRID_SHORTLIST and document["info"]["queries"] == 25
    for row in rows:
        assert 0 <= row["map_at_1000"] <= 1 and 0 <= row["recall_at_10"] <= 1
        assert row["method"] in ("vae", "hybrid") or row["lookup_us"] > 0
    vae = rows[-1]
    for hybrid in (r for r in rows if r["method"] == "hybrid"):
        assert hybrid["bytes_per_item"] == hybrid["bits"] // 8 + 4 * 32
        for metric in ("map_at_1000", "recall_at_10", "r10_at_100"):  # the whole database re-ranked
            assert hybrid[metric] == pytest.approx(vae[metric], abs=1e-12), metric
    table = out_md.read_text().splitlines()
    assert table[0].startswith("| method | bits |") and len(table) == 2 + len(rows)
    assert result.stdout.splitlines()[0].startswith("method | bits")


def test_hybrid_rankings_continue_in_hamming_order():
    hamming = np.array([[3, 0, 4, 1, 2], [0, 1, 2, 3, 4]])
    top = np.array([[4, 1], [2, 0]])
    assert _answer_then_hamming(top, hamming).tolist() == [[4, 1, 3, 0, 2], [2, 0, 1, 3, 4]]


# --------------------------------------------------------------------------- --task duplicates
def run_bench_cli(*args: str):
    return CliRunner().invoke(app, ["bench", *args], catch_exceptions=False)


def test_duplicates_task_runs_the_near_duplicate_bench(tmp_path, one_faiss_thread):
    if not FASHION_TRAIN_IMAGES.is_file():
        pytest.skip("Fashion-MNIST not installed; run `make data`")
    out_json, out_md = tmp_path / "out" / "dup.json", tmp_path / "out" / "dup.md"  # a folder made for them
    methods, transforms = ("pixels", "codes", "hybrid"), ("identity", "jpeg q50")
    result = run_bench_cli(
        "--task", "duplicates", "--db-limit", "100", "--originals", "3", "--transforms", ",".join(transforms), "--epochs", "1",
        "--bits", "16", "--methods", ",".join(methods), "--json", str(out_json), "--markdown", str(out_md), "-q",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out_json.read_text())
    assert [(r["method"], r["transform"]) for r in document["rows"]] == [(m, t) for m in methods for t in transforms]
    assert document["info"]["database"] == 100 and document["info"]["originals"] == 3 and document["info"]["queries"] == 6
    assert document["methods"]["codes"]["bits"] == document["methods"]["hybrid"]["bits"] == 16
    assert "trained" in document["info"]["hashae_models"]["hashing"]
    identity = {r["method"]: r for r in document["rows"] if r["transform"] == "identity"}
    assert identity["pixels"]["recall_at_1"] == identity["hybrid"]["recall_at_1"] == 1.0  # a copy's own pixels: found first
    assert all(0 <= r[m] <= 1 for r in document["rows"] for m in ("recall_at_1", "recall_at_10", "recall_at_threshold"))
    text = out_md.read_text()
    assert result.stdout == text and "### recall@1" in text and "| jpeg q50 |" in text
    assert "Command: `hashae bench --task duplicates --bits 16 --methods pixels,codes,hybrid --db-limit 100" in text
    assert "--transforms 'identity,jpeg q50'" in text  # quoted as a shell would need it


def test_duplicates_task_measures_a_stores_models(tmp_path_factory, tmp_path, one_faiss_thread):
    _, store = small_store(tmp_path_factory)  # skips without Fashion-MNIST
    out_json = tmp_path / "dup.json"
    result = run_bench_cli("--task", "duplicates", "--store", str(store), "--db-limit", "50", "--originals", "2", "--transforms", "identity",
                           "--methods", "latent", "--json", str(out_json), "-q")
    assert result.exit_code == 0, result.output
    document = json.loads(out_json.read_text())
    assert document["info"]["hashae_models"] == {"hashing": f"store {store}", "latent": f"store {store}"}
    assert [(r["method"], r["transform"], r["recall_at_1"]) for r in document["rows"]] == [("latent", "identity", 1.0)]
    assert f"--store {store}" in result.stdout  # the command line in the report


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "copies"], "use retrieval or duplicates"),
        (["--task", "duplicates", "--queries", "5", "--plot", "p.png"], "--queries, --plot do not apply to --task duplicates"),
        (["images", "--task", "duplicates"], "measures on Fashion-MNIST"),
        (["--originals", "4"], "--originals does not apply to --task retrieval"),
        (["--transforms", "identity", "--store", "s"], "--store, --transforms do not apply to --task retrieval"),
        (["--task", "duplicates", "--bits", "16,32"], "one code length"),
        (["--task", "duplicates", "--bits", "12"], "multiple of 8"),
        (["--task", "duplicates", "--store", "s", "--epochs", "2"], "--epochs does not apply to --task duplicates with --store"),
    ],
)
def test_options_of_another_task_are_one_line_errors(args, words, tmp_path):
    result = run_bench_cli(*args, "--json", str(tmp_path / "never.json"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr, result.stderr
    assert not (tmp_path / "never.json").exists()


def test_duplicates_task_refuses_unknown_names_and_stores_before_running(tmp_path):
    unknown = run_bench_cli("--task", "duplicates", "--methods", "itq", "-q")
    assert unknown.exit_code == 1 and len(unknown.stderr.splitlines()) == 1 and "['itq']" in unknown.stderr
    missing = run_bench_cli("--task", "duplicates", "--store", str(tmp_path / "nowhere"), "-q")
    assert missing.exit_code == 1 and "no hashae store" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_help_names_the_duplicates_benchs_methods_and_transforms():
    assert DUPLICATE_METHODS == ", ".join(DUPLICATES_ALL_METHODS)
    assert DUPLICATE_TRANSFORMS == ", ".join(TRANSFORMS)
