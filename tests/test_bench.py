"""`hashae bench` end to end on a small labelled folder: every asked row, the JSON and Markdown
outputs, and the hybrid row answered by the search module (on a database smaller than the hybrid
shortlist the product's hybrid ranks every item by VAE-mean distance: exactly as the vae row)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import draw_images
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.index.bench.run import _answer_then_hamming
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
